"""`ctl agents`: one row per agent."""
from __future__ import annotations

import argparse
import time

from common.states import agent_word
from ctl.client import Client
from ctl.output import emit_json, table


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("agents", parents=[parent], help="list the agents",
                       description=__doc__)
    p.set_defaults(run=run)


def ago(t: float) -> str:
    if not t:
        return "never"
    secs = max(0.0, time.time() - t)
    return f"{secs:.0f}s ago" if secs < 120 else time.strftime("%H:%M:%S", time.localtime(t))


def run(args: argparse.Namespace, client: Client) -> int:
    agents = client.agents()
    if args.json:
        emit_json([{"name": a.name, "address": a.address, "state": agent_word(a.state),
                    "capacity": a.capacity, "instances": a.instances,
                    "last_seen": a.last_seen or None, "connected": a.connected}
                   for a in agents])
        return 0
    if not agents:
        print("No agents.")
        return 0
    print(table(["NAME", "STATE", "ADDRESS", "INSTANCES", "CAPACITY", "LAST SEEN"],
                [[a.name, agent_word(a.state), a.address, a.instances, a.capacity, ago(a.last_seen)]
                 for a in agents]))
    return 0
