"""`ctl ps [--type TYPE] [--state STATE]`: one row per instance of the app."""
from __future__ import annotations

import argparse

from common.names import InvalidName, check_name
from common.states import InstanceState, instance_word
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json, table
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ps", parents=[parent], help="list the app's instances",
                       description=__doc__)
    p.add_argument("--type", default="", metavar="TYPE", help="only instances of this type")
    p.add_argument("--state", default="", metavar="STATE",
                   choices=[s.word for s in InstanceState if s != InstanceState.UNSPECIFIED],
                   help="only instances in this state (running, pending, crashed, ...)")
    p.set_defaults(run=run)


def instance_json(i: pb.Instance) -> dict:
    return {"id": i.id, "app": i.app, "type": i.type, "agent": i.agent or None,
            "state": instance_word(i.state), "pid": i.pid or None, "port": i.port or None,
            "restarts": i.restarts, "release": i.release, "reason": i.reason}


def run(args: argparse.Namespace, client: Client) -> int:
    if args.type:
        try:
            check_name("process type", args.type)
        except InvalidName as e:
            raise CtlError(str(e), USAGE) from None
    state = InstanceState[args.state.upper()] if args.state else InstanceState.UNSPECIFIED
    instances = client.instances(args.app, args.type, state)
    if args.json:
        emit_json([instance_json(i) for i in instances])
        return 0
    if not instances:
        print(f"No instances of {args.app}.")
        return 0
    print(table(["ID", "STATE", "AGENT", "PID", "PORT", "RESTARTS", "RELEASE", "REASON"],
                [[i.id, instance_word(i.state), i.agent or "-", i.pid or "-", i.port or "-", i.restarts,
                  f"v{i.release}" if i.release else "-",
                  i.reason if i.state != InstanceState.RUNNING else ""] for i in instances]))
    return 0
