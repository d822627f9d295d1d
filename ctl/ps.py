"""`ctl ps`: one row per instance of the app."""
from __future__ import annotations

import argparse

from common.states import InstanceState, instance_word
from ctl.client import Client
from ctl.output import emit_json, table
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ps", parents=[parent], help="list the app's instances",
                       description=__doc__)
    p.set_defaults(run=run)


def instance_json(i: pb.Instance) -> dict:
    return {"id": i.id, "app": i.app, "type": i.type, "agent": i.agent or None,
            "state": instance_word(i.state), "pid": i.pid or None, "port": i.port or None,
            "restarts": i.restarts, "release": i.release, "reason": i.reason}


def run(args: argparse.Namespace, client: Client) -> int:
    instances = client.instances(args.app)
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
