"""`ctl`: deploy, scale and inspect a Formation app. Exit codes: 0 ok, 1 runtime failure,
2 bad usage or rejected input; errors are one line on stderr."""
from __future__ import annotations

import argparse
import os
import sys

from common.names import InvalidName, check_name
from common.tls import TlsPaths, paths_from
from ctl import (
    agents,
    config,
    context,
    deploy,
    dev,
    drain,
    events,
    formation,
    logs,
    ps,
    releases,
    restart,
    rollback,
    scale,
    schedulers,
    tls,
)
from ctl.client import Client
from ctl.errors import USAGE, CtlError

COMMANDS = (deploy, releases, config, rollback, restart, scale, ps, formation, events, agents, drain,
            schedulers, logs, dev, tls)


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"ctl: {message}\n")
        sys.exit(USAGE)


def global_options(suppress: bool) -> argparse.ArgumentParser:
    """The global options, accepted before or after the subcommand."""
    p = Parser(add_help=False)
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    env = os.environ.get
    p.add_argument("--scheduler", metavar="HOST:PORT[,...]",
                   default=d(env("FORMATION_SCHEDULER", "")),
                   help="scheduler address(es) (env FORMATION_SCHEDULER); default: the "
                        "running `ctl dev` cluster if there is one, else 127.0.0.1:7070")
    p.add_argument("--tls-ca", metavar="FILE", default=d(env("FORMATION_TLS_CA", "")),
                   help="the cluster CA certificate (env FORMATION_TLS_CA)")
    p.add_argument("--tls-cert", metavar="FILE", default=d(env("FORMATION_TLS_CERT", "")),
                   help="your certificate, operator or viewer (env FORMATION_TLS_CERT)")
    p.add_argument("--tls-key", metavar="FILE", default=d(env("FORMATION_TLS_KEY", "")),
                   help="your private key (env FORMATION_TLS_KEY)")
    p.add_argument("-a", "--app", metavar="NAME",
                   default=d(os.environ.get("FORMATION_APP", "default")),
                   help="app name (env FORMATION_APP, default 'default')")
    p.add_argument("--json", action="store_true", default=d(False), help="machine output")
    return p


def parser() -> Parser:
    top = Parser(prog="ctl", parents=[global_options(False)], description=__doc__)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub, global_options(True))
    return top


def connection(args: argparse.Namespace) -> tuple[str, TlsPaths | None]:
    """The scheduler address(es) and TLS files: as given, else the running `ctl dev`'s."""
    try:
        paths = paths_from(args)
    except ValueError as e:
        raise CtlError(str(e), USAGE) from None
    if args.scheduler:
        return args.scheduler, paths
    found = context.read()
    if found is None:
        return "127.0.0.1:7070", paths
    if paths is None and found.tls_cert:
        paths = TlsPaths(found.tls_ca, found.tls_cert, found.tls_key)
    return found.scheduler, paths


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not getattr(args, "run", None):
        parser().print_help(sys.stderr)
        sys.exit(USAGE)
    try:
        check_name("app", args.app)
        if getattr(args, "needs_client", True):
            client = Client(*connection(args))
            try:
                code = args.run(args, client)
            finally:
                client.close()
        else:
            code = args.run(args)
    except InvalidName as e:
        sys.stderr.write(f"ctl: {e}\n")
        sys.exit(USAGE)
    except CtlError as e:
        sys.stderr.write(f"ctl: {e}\n")
        sys.exit(e.code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
