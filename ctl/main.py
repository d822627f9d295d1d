"""`ctl`: deploy, scale and inspect a Formation app. Exit codes: 0 ok, 1 runtime failure,
2 bad usage or rejected input; errors are one line on stderr."""
from __future__ import annotations

import argparse
import os
import sys

from common.names import InvalidName, check_name
from ctl import agents, deploy, dev, drain, formation, logs, ps, scale
from ctl.client import Client
from ctl.errors import USAGE, CtlError

COMMANDS = (deploy, scale, ps, formation, agents, drain, logs, dev)


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"ctl: {message}\n")
        sys.exit(USAGE)


def global_options(suppress: bool) -> argparse.ArgumentParser:
    """The global options, accepted before or after the subcommand."""
    p = Parser(add_help=False)
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--scheduler", metavar="HOST:PORT[,...]",
                   default=d(os.environ.get("FORMATION_SCHEDULER", "127.0.0.1:7070")),
                   help="scheduler address(es) (env FORMATION_SCHEDULER)")
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


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not getattr(args, "run", None):
        parser().print_help(sys.stderr)
        sys.exit(USAGE)
    try:
        check_name("app", args.app)
        if getattr(args, "needs_client", True):
            client = Client(args.scheduler)
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
