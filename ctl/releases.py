"""`ctl releases`: the app's releases, newest first: version, when, who, what, status."""
from __future__ import annotations

import argparse
import datetime

from common.escape import escape
from ctl.client import Client
from ctl.output import emit_json, table
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("releases", parents=[parent], help="the app's releases, newest first",
                       description=__doc__)
    p.set_defaults(run=run)


def when(created: float) -> str:
    """ISO 8601 in UTC, to the second."""
    return datetime.datetime.fromtimestamp(created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace, client: Client) -> int:
    releases = client.releases(args.app)
    if args.json:
        emit_json([{"version": r.version, "created": when(r.created), "author": r.author,
                    "description": r.description, "status": r.status,
                    **({"reason": r.reason} if r.reason else {}),
                    **({"crash_looping": True} if r.crash_looping else {})}
                   for r in releases])
        return 0
    if not releases:
        print(f"{args.app} has no release yet: run 'ctl deploy PROCFILE'.")
        return 0
    print(table(["VERSION", "CREATED", "AUTHOR", "DESCRIPTION", "STATUS"],
                [[f"v{r.version}", when(r.created), escape(r.author) or "-",
                  escape(r.description), status(r)] for r in releases]))
    return 0


def status(r: pb.ReleaseInfo) -> str:
    """The status column: the word, why it failed, and whether it crash-loops."""
    out = r.status + (f": {escape(r.reason)}" if r.reason else "")
    return out + (" (crash-looping on every agent)" if r.crash_looping else "")
