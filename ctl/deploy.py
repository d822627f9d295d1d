"""`ctl deploy PROCFILE [--env K=V]... [--env-file FILE] [--settings FILE]`: a new release.

Reads the Procfile and, beside it, formation.toml (or --settings FILE) for per-type settings.
Checks everything the scheduler will (common/appdef.py), so a bad file is refused here with
its file and line; names Heroku would correct (`critical_job`) are corrected with a warning.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from common.appdef import DEFAULT_RELEASE_TIMEOUT, AppDefError, ProcessType, check_release
from common.appdef_pb import type_to_pb
from common.appfiles import (
    parse_env_file,
    parse_env_line,
    parse_procfile,
    parse_release_timeout,
    parse_settings,
)
from ctl import waitrelease
from ctl.author import author
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
    waitrelease.add_flags(p)
    p.set_defaults(run=run)


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CtlError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}",
                       USAGE) from None


@dataclass(frozen=True)
class AppFiles:
    """What a Procfile and its settings file say: the process types with their settings, the
    names the Procfile spelled differently (spelling -> name), the release phase."""
    types: dict[str, ProcessType]
    renamed: dict[str, str]
    release_command: str = ""
    release_timeout: float = DEFAULT_RELEASE_TIMEOUT


def load_files(procfile: str, settings: str | None, warnings: list[str] | None = None
               ) -> AppFiles:
    """Read the Procfile and its settings; AppDefError names the bad line; warnings are
    appended."""
    parsed = parse_procfile(read_text(procfile, "Procfile"), procfile)
    if warnings is not None:
        warnings.extend(parsed.warnings)
    if settings is None:
        beside = os.path.join(os.path.dirname(procfile) or ".", "formation.toml")
        settings = beside if os.path.exists(beside) else None
    text = read_text(settings, "settings file") if settings else ""
    source = settings or "formation.toml"
    return AppFiles(parse_settings(text, parsed.commands, source, warnings), parsed.renamed,
                    parsed.release, parse_release_timeout(text, parsed.release, source))


def prepare(args: argparse.Namespace) -> tuple[pb.DeployRequest, dict[str, str]]:
    """The request, checked as the scheduler will check it, and the renamed types; warnings
    are written to stderr, one line each."""
    warnings: list[str] = []
    try:
        files = load_files(args.procfile, args.settings, warnings)
        env: dict[str, str] = {}
        if args.env_file:
            env.update(parse_env_file(read_text(args.env_file, "env file"), args.env_file))
        for item in args.env:
            key, value = parse_env_line(item, "--env")
            env[key] = value
        check_release(files.types, env, files.release_command, files.release_timeout)
    except AppDefError as e:
        raise CtlError(str(e), USAGE) from None
    for warning in warnings:
        sys.stderr.write(f"ctl: warning: {warning}\n")
    request = pb.DeployRequest(app=args.app,
                               types=[type_to_pb(t) for t in files.types.values()],
                               env=env, author=author(), release_command=files.release_command,
                               release_timeout=files.release_timeout)
    return request, files.renamed


def build_request(args: argparse.Namespace) -> pb.DeployRequest:
    return prepare(args)[0]


def run(args: argparse.Namespace, client: Client) -> int:
    request, renamed = prepare(args)
    reply = client.deploy(request)
    if args.wait:
        waitrelease.wait(client, args, reply.version)
    names = [t.name for t in request.types]
    if args.json:
        emit_json({"app": args.app, "release": reply.version, "types": names,
                   "renamed": renamed, "release_phase": bool(request.release_command)})
    else:
        note = "".join(f"; {spelled} is now {name}" for spelled, name in renamed.items())
        phase = "; its release phase runs first" if request.release_command else ""
        print(f"Deployed {args.app} release v{reply.version} ({', '.join(names)}{note}{phase})")
    return 0
