"""`ctl rollback [vN] [--run-release] [--wait]`: a new release with the code, settings and
config vars of release vN (default: the newest one before the current one that rolled out
fine), made current like a deploy. Counts do not change. vN's release phase does not run again
unless --run-release says so: a migration run a second time, backwards, is a hazard."""
from __future__ import annotations

import argparse

from ctl import waitrelease
from ctl.author import author
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rollback", parents=[parent], help="go back to an earlier release",
                       description=__doc__.split("\n")[0])
    p.add_argument("version", nargs="?", default="", metavar="vN",
                   help="the release to go back to (default: the one before the current)")
    p.add_argument("--run-release", action="store_true",
                   help="run vN's release phase again before rolling it out")
    waitrelease.add_flags(p)
    p.set_defaults(run=run)


def parse_version(text: str) -> int:
    """`v3` or `3` -> 3; "" -> 0 (the one before the current)."""
    digits = text.removeprefix("v")
    if not text:
        return 0
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18 and int(digits) > 0):
        raise CtlError(f"a release is vN or N (N from 1), not {text[:40]!r}", USAGE)
    return int(digits)


def run(args: argparse.Namespace, client: Client) -> int:
    reply = client.rollback(args.app, parse_version(args.version), author(), args.run_release)
    if args.wait:
        waitrelease.wait(client, args, reply.version)
    if args.json:
        emit_json({"app": args.app, "release": reply.version, "to": reply.to})
    else:
        print(f"Rolled {args.app} back to v{reply.to}: release v{reply.version}")
    return 0
