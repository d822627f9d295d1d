"""`ctl drain AGENT [--wait]` and `ctl undrain AGENT`: move instances off an agent, or let it
take new ones again.

Draining starts each replacement elsewhere before stopping the old copy (at_most_once types
stop first, then start elsewhere). `ctl agents` shows the agent `draining`, then `drained`.
"""
from __future__ import annotations

import argparse
import time

from common.names import InvalidName, check_name
from common.states import AgentState, agent_word
from ctl.client import Client
from ctl.errors import RUNTIME, USAGE, CtlError
from ctl.output import emit_json


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drain", parents=[parent], help="move all instances off an agent",
                       description=__doc__.splitlines()[0])
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("--wait", action="store_true", help="wait until it is drained")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S")
    p.set_defaults(run=run, undo=False)
    u = sub.add_parser("undrain", parents=[parent], help="let a drained agent take instances",
                       description="Let a drained agent take new instances again.")
    u.add_argument("agent", metavar="AGENT")
    u.set_defaults(run=run, undo=True, wait=False, timeout=0)


def run(args: argparse.Namespace, client: Client) -> int:
    try:
        check_name("agent", args.agent)
    except InvalidName as e:
        raise CtlError(str(e), USAGE) from None
    agent = client.drain(args.agent, undo=args.undo)
    if args.wait:
        deadline = time.monotonic() + args.timeout
        while agent.state != AgentState.DRAINED:
            if time.monotonic() > deadline:
                raise CtlError(f"{args.agent} not drained after {args.timeout:g}s "
                               f"({agent.instances} instances left)", RUNTIME)
            time.sleep(0.2)  # polling the remote API between checks
            agent = next((a for a in client.agents() if a.name == args.agent), agent)
    if args.json:
        emit_json({"name": agent.name, "state": agent_word(agent.state), "instances": agent.instances})
    else:
        print(f"{agent.name}: {agent_word(agent.state)}" + (f" ({agent.instances} instances to move)"
                                                 if agent.state == AgentState.DRAINING else ""))
    return 0
