"""`ctl deploy PROCFILE [--env K=V]... [--env-file FILE] [--settings FILE]`: a new release.

Reads the Procfile and, beside it, formation.toml (or --settings FILE) for per-type settings.
"""
from __future__ import annotations

import argparse
import os

from common.appdef import (
    AppDefError,
    ProcessType,
    parse_env_file,
    parse_env_line,
    parse_procfile,
    parse_settings,
)
from common.appdef_pb import type_to_pb
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("deploy", parents=[parent], help="create a new release from a Procfile",
                       description=__doc__.splitlines()[0])
    p.add_argument("procfile", metavar="PROCFILE")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable of the release (repeatable)")
    p.add_argument("--env-file", metavar="FILE", help="read KEY=VALUE lines from FILE")
    p.add_argument("--settings", metavar="FILE",
                   help="per-type settings (default: formation.toml beside the Procfile)")
    p.set_defaults(run=run)


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CtlError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}",
                       USAGE) from None


def load_types(procfile: str, settings: str | None) -> dict[str, ProcessType]:
    """The process types of a Procfile with their settings; AppDefError names the bad line."""
    commands = parse_procfile(read_text(procfile, "Procfile"), procfile)
    if settings is None:
        beside = os.path.join(os.path.dirname(procfile) or ".", "formation.toml")
        settings = beside if os.path.exists(beside) else None
    text = read_text(settings, "settings file") if settings else ""
    return parse_settings(text, commands, settings or "formation.toml")


def build_request(args: argparse.Namespace) -> pb.DeployRequest:
    try:
        types = load_types(args.procfile, args.settings)
        env: dict[str, str] = {}
        if args.env_file:
            env.update(parse_env_file(read_text(args.env_file, "env file"), args.env_file))
        for item in args.env:
            key, value = parse_env_line(item, "--env")
            env[key] = value
    except AppDefError as e:
        raise CtlError(str(e), USAGE) from None
    return pb.DeployRequest(app=args.app, types=[type_to_pb(t) for t in types.values()], env=env)


def run(args: argparse.Namespace, client: Client) -> int:
    request = build_request(args)
    reply = client.deploy(request)
    if args.json:
        emit_json({"app": args.app, "release": reply.version,
                   "types": [t.name for t in request.types]})
    else:
        print(f"Deployed {args.app} release v{reply.version} "
              f"({', '.join(t.name for t in request.types)})")
    return 0
