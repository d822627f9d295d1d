"""`ctl events [--tail N] [-f]`: what happened to the app, oldest first, one line each (time
in UTC, kind, what, who): releases, rollouts, scales, config changes (names only, never
values), instances crashed, unhealthy or moved, agents down and up again. Like Heroku's
activity feed or `kubectl get events`. -f keeps printing new ones as they happen.

--json: a list of {"time", "kind", "text", "author"}; with -f, one object per line, with
"missed": events this reader lost just before this one (it read too slowly; the text output
says `[N events missed]`)."""
from __future__ import annotations

import argparse
import datetime
import json
import sys

from common.escape import escape
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json
from proto import formation_pb2 as pb

MAX_TAIL = 1000  # events the scheduler keeps per app; --tail beyond is refused (as there)
KIND_WIDTH = 8   # "instance", the longest kind


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("events", parents=[parent], help="what happened to the app, in order",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--tail", type=int, default=0, metavar="N",
                   help=f"only the last N events, 1 to {MAX_TAIL} (default: all kept)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.set_defaults(run=run)


def utc(t: float, fmt: str) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime(fmt)


def as_json(e: pb.EventInfo) -> dict:
    """An event as --json shows it: time in ISO 8601, UTC, to the millisecond."""
    stamp = utc(e.time, "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {"time": stamp, "kind": e.kind, "text": e.text, "author": e.author}


def line(e: pb.EventInfo) -> str:
    """`2026-11-30 10:41:07  rollout   v8 rolled out (alice@laptop)`; control characters shown
    escaped, whatever the scheduler sends."""
    who = f" ({escape(e.author)})" if e.author else ""
    return (f"{utc(e.time, '%Y-%m-%d %H:%M:%S')}  {escape(e.kind):<{KIND_WIDTH}}  "
            f"{escape(e.text)}{who}")


def run(args: argparse.Namespace, client: Client) -> int:
    if not 0 <= args.tail <= MAX_TAIL:
        raise CtlError(f"--tail must be 1 to {MAX_TAIL} (0: all kept)", USAGE)
    request = pb.EventsRequest(app=args.app, tail=args.tail, follow=args.follow)
    out = sys.stdout
    try:
        if not args.follow:
            events = list(client.events(request))
            if args.json:
                emit_json([as_json(e) for e in events])
            elif events:
                out.write("".join(line(e) + "\n" for e in events))
            else:
                print(f"{args.app} has no events yet.")
            return 0
        for e in client.events(request):
            if args.json:
                out.write(json.dumps({**as_json(e), "missed": e.missed}) + "\n")
            else:
                if e.missed:
                    out.write(f"[{e.missed} events missed]\n")
                out.write(line(e) + "\n")
            out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0
