"""`ctl formation`: desired and running instances per process type.
`ctl formation history`: every change of the counts, newest first (who, when, before → after);
`ctl scale --undo` restores the counts from before the last one."""
from __future__ import annotations

import argparse

from common.escape import escape
from ctl.client import Client
from ctl.output import emit_json, table
from ctl.releases import when


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("formation", parents=[parent], help="desired and running per type",
                       description=__doc__)
    p.add_argument("what", nargs="?", choices=["history"],
                   help="history: every change of the counts, newest first")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Client) -> int:
    if args.what == "history":
        return history(args, client)
    reply = client.formation(args.app)
    if args.json:
        emit_json({t.type: {"desired": t.desired, "running": t.running,
                            **({"crash_looping": True} if t.crash_looping else {})}
                   for t in reply.types})
        return 0
    if not reply.release:
        print(f"{args.app} has no release yet: run 'ctl deploy PROCFILE'.")
        return 0
    print(table(["TYPE", "DESIRED", "RUNNING"],
                [[t.type, t.desired, f"{t.running} (crash-looping on every agent)"
                  if t.crash_looping else t.running] for t in reply.types]))
    return 0


def history(args: argparse.Namespace, client: Client) -> int:
    changes = client.scales(args.app)
    if args.json:
        emit_json([{"time": when(c.time), "author": c.author, "before": dict(c.before),
                    "after": dict(c.after), "undo": c.undo} for c in changes])
        return 0
    if not changes:
        print(f"{args.app}'s counts were never changed.")
        return 0
    print(table(["TIME", "AUTHOR", "CHANGE"], [
        [when(c.time), escape(c.author) or "-",
         ", ".join(f"{t} {c.before.get(t, 0)}→{n}" for t, n in sorted(c.after.items()))
         + (" (undo)" if c.undo else "")] for c in changes]))
    return 0
