"""`ctl logs [TYPE|INSTANCE] [--tail N] [-f]`: the app's logs from every agent, in time order,
each line prefixed `time instance |`, like `heroku logs --tail`. --json: one object per line.

Control characters in a line (ANSI and OSC sequences, CR, backspace, ...; not tab) are shown
escaped (`\x1b`), so an instance cannot drive the terminal; --json keeps the raw text. A
follower that read too slowly is told what it missed: `[N lines missed]` before the next line
(--json: `"missed": N` on that line)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from common.escape import escape
from common.names import InvalidName, check_name, split_instance_id
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from proto import formation_pb2 as pb

MAX_TAIL = 100_000  # most lines of --tail; the scheduler refuses more (scheduler/logs.py)


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[parent], help="show (and follow) instance logs",
                       description=__doc__.splitlines()[0])
    p.add_argument("selector", nargs="?", default="", metavar="TYPE|INSTANCE")
    p.add_argument("-n", "--tail", type=int, default=100, metavar="N",
                   help=f"lines of history, 0 to {MAX_TAIL} (default 100)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    p.set_defaults(run=run)


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def run(args: argparse.Namespace, client: Client) -> int:
    try:
        if args.selector:
            if "." in args.selector:
                split_instance_id(args.selector)
            else:
                check_name("process type", args.selector)
    except (InvalidName, ValueError) as e:
        raise CtlError(str(e), USAGE) from None
    if not 0 <= args.tail <= MAX_TAIL:
        raise CtlError(f"--tail must be 0 to {MAX_TAIL}", USAGE)
    request = pb.LogsRequest(app=args.app, selector=args.selector, tail=args.tail,
                             follow=args.follow)
    out = sys.stdout
    try:
        for line in client.logs(request):
            if args.json:
                out.write(json.dumps({"time": line.time, "app": line.app,
                                      "instance": line.instance, "agent": line.agent,
                                      "text": line.text, "missed": line.missed}) + "\n")
            else:
                if line.missed:
                    out.write(f"[{line.missed} lines missed]\n")
                out.write(f"{stamp(line.time)} {line.instance} | {escape(line.text)}\n")
            if args.follow:
                out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    return 0
