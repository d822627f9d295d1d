"""`ctl agents [rm NAME]`: one row per agent; `rm` forgets a down agent now."""
from __future__ import annotations

import argparse
import time

from common.names import InvalidName, check_name
from common.states import agent_word
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json, table


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("agents", parents=[parent], help="list the agents (rm NAME: forget a "
                       "down one)", description=__doc__)
    p.add_argument("action", nargs="?", choices=["rm"], help="rm: forget a down agent now")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(run=run)


def ago(t: float) -> str:
    if not t:
        return "never"
    secs = max(0.0, time.time() - t)
    return f"{secs:.0f}s ago" if secs < 120 else time.strftime("%H:%M:%S", time.localtime(t))


def run(args: argparse.Namespace, client: Client) -> int:
    if args.action == "rm":
        if not args.name:
            raise CtlError("usage: ctl agents rm NAME", USAGE)
        try:
            name = check_name("agent", args.name)
        except InvalidName as e:
            raise CtlError(str(e), USAGE) from None
        client.remove_agent(name)
        if args.json:
            emit_json({"name": name, "removed": True})
        else:
            print(f"Forgot agent {name}.")
        return 0
    if args.name:
        raise CtlError(f"unexpected argument {args.name!r}: did you mean 'ctl agents rm "
                       f"{args.name}'?", USAGE)
    agents = client.agents()
    if args.json:
        emit_json([{"name": a.name, "address": a.address, "state": agent_word(a.state),
                    "capacity": a.capacity, "instances": a.instances,
                    "last_seen": a.last_seen or None, "connected": a.connected,
                    "isolation": a.isolation or None}
                   for a in agents])
        return 0
    if not agents:
        print("No agents.")
        return 0
    print(table(["NAME", "STATE", "ADDRESS", "INSTANCES", "CAPACITY", "LAST SEEN", "ISOLATION"],
                [[a.name, agent_word(a.state), a.address, a.instances, a.capacity,
                  ago(a.last_seen), a.isolation or "-"] for a in agents]))
    return 0
