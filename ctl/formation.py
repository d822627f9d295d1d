"""`ctl formation`: desired and running instances per process type."""
from __future__ import annotations

import argparse

from ctl.client import Client
from ctl.output import emit_json, table


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("formation", parents=[parent], help="desired and running per type",
                       description=__doc__)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Client) -> int:
    reply = client.formation(args.app)
    if args.json:
        emit_json({t.type: {"desired": t.desired, "running": t.running} for t in reply.types})
        return 0
    if not reply.release:
        print(f"{args.app} has no release yet: run 'ctl deploy PROCFILE'.")
        return 0
    print(table(["TYPE", "DESIRED", "RUNNING"],
                [[t.type, t.desired, t.running] for t in reply.types]))
    return 0
