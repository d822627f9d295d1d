"""`ctl schedulers`: the scheduler replicas, which leads and since when, and whether each is
healthy (its lease in etcd alive and its health check answered just now). Any replica
answers, also while none leads."""
from __future__ import annotations

import argparse
import time

from ctl.agents import ago
from ctl.client import Client
from ctl.output import emit_json, table


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("schedulers", parents=[parent], help="list the scheduler replicas and "
                       "which leads", description=__doc__)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Client) -> int:
    replicas = client.schedulers()
    if args.json:
        emit_json([{"name": r.name, "address": r.address, "leader": r.leader,
                    "since": r.since or None, "healthy": r.healthy} for r in replicas])
        return 0
    if not replicas:
        print("No scheduler replicas in etcd.")
        return 0
    print(table(["NAME", "ADDRESS", "ROLE", "SINCE", "HEALTHY"],
                [[r.name, r.address, "leader" if r.leader else "follower",
                  ago(r.since), "yes" if r.healthy else "no"] for r in replicas]))
    if not any(r.leader and r.healthy for r in replicas):
        print(f"(no healthy leader at {time.strftime('%H:%M:%S')}: an election may be under "
              "way)")
    return 0
