"""`ctl restart [TYPE|INSTANCE…] [--wait]`: restart instances on their release, same ids. A
type (every type of the app if none is named) rolls under its [TYPE.deploy] settings, never
below its count serving; an instance (`web.3`) just restarts. Recorded in `ctl events`."""
from __future__ import annotations

import argparse
import sys

from common.states import InstanceState
from ctl import waitrelease
from ctl.author import author
from ctl.client import Client
from ctl.errors import RUNTIME, CtlError
from ctl.output import emit_json
from ctl.progress import check_timeout, watch
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("restart", parents=[parent], help="restart instances, same release",
                       description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", metavar="TYPE|INSTANCE",
                   help="process types (web) and instances (web.3); none: every type")
    waitrelease.add_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Client) -> int:
    if args.wait:
        check_timeout(args.timeout)
    before = {i.id: i.pid for i in client.instances(args.app)} if args.wait else {}
    reply = client.restart(args.app, list(args.targets), author())
    if args.wait:
        wait(client, args, reply, before)
    if args.json:
        emit_json({"app": args.app, "types": list(reply.types),
                   "instances": list(reply.instances), "release": reply.release})
    else:
        what = [*reply.types, *reply.instances]
        print(f"Restarting {', '.join(what) or 'nothing'} of {args.app} (v{reply.release})")
    return 0


def wait(client: Client, args: argparse.Namespace, reply: pb.RestartReply,
         before: dict[str, int]) -> None:
    """Until the types' rollout finished and each instance named runs a new process."""
    ids = set(reply.instances)

    def check() -> tuple[bool, str]:
        rolled = not reply.types or waitrelease.outcome(client.releases(args.app),
                                                        reply.release) == ""
        rows = {i.id: i for i in client.instances(args.app)}
        fresh = [i for i in ids if i in rows and rows[i].state == InstanceState.RUNNING
                 and rows[i].pid and rows[i].pid != before.get(i)]
        return rolled and len(fresh) == len(ids), \
            f"{len(fresh)}/{len(ids)} restarted" + ("" if rolled else "; rolling")
    done, line = watch(check, args.timeout, sys.stderr.isatty() and not args.json)
    if not done:
        raise CtlError(f"timed out after {args.timeout:g}s waiting for the restart: {line}",
                       RUNTIME)
