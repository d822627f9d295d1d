"""`ctl scale TYPE=N [TYPE=N...] [--wait] [--timeout S]`: set desired counts.

`TYPE+N`, `TYPE=+N` and `TYPE-N` change a count relative to the current one (like Heroku).
With --wait, shows progress and exits 0 once every scaled type runs exactly its count, 1 on
timeout.
"""
from __future__ import annotations

import argparse
import sys

from common.appfiles import normalise_type_name
from common.names import NAME_RE, InvalidName, check_count, check_name, parse_count
from common.states import InstanceState
from ctl.author import author
from ctl.client import Client
from ctl.errors import RUNTIME, USAGE, CtlError
from ctl.output import emit_json
from ctl.progress import check_timeout, watch
from proto import formation_pb2 as pb


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scale", parents=[parent], help="set desired counts per type",
                       description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", metavar="TYPE=N")
    p.add_argument("--undo", action="store_true",
                   help="restore the counts from before the last change")
    p.add_argument("--wait", action="store_true", help="wait until the formation runs")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds --wait waits (default 60)")
    p.set_defaults(run=run)


def parse_specs(specs: list[str]) -> dict[str, tuple[str, int]]:
    """`web=3` -> {"web": ("=", 3)}; `web+1` -> {"web": ("+", 1)}. Raises CtlError (usage)."""
    out: dict[str, tuple[str, int]] = {}
    for spec in specs:
        if "=" in spec:
            ptype, _, n = spec.partition("=")
            op = "+" if n.startswith("+") else "="
            n = n.removeprefix("+")
        elif "+" in spec:
            ptype, _, n = spec.rpartition("+")
            op = "+"
        elif "-" in spec and spec.rpartition("-")[2].isdigit():
            ptype, _, n = spec.rpartition("-")
            op = "-"
        else:
            raise CtlError(f"expected TYPE=N, got {spec!r}", USAGE)
        try:
            ptype = _type_name(ptype)
            if op == "=" and n.startswith("-"):
                raise ValueError(f"count for {ptype!r} must be from 0 up, not {n} "
                                 f"(to remove instances use {ptype}-N)")
            count = parse_count(ptype, n)
        except (InvalidName, ValueError) as e:
            raise CtlError(str(e), USAGE) from None
        if ptype in out:
            raise CtlError(f"process type {ptype!r} given twice", USAGE)
        out[ptype] = (op, count)
    return out


def _type_name(spelled: str) -> str:
    """A valid type name, or InvalidName that suggests the name a Procfile spelling became."""
    try:
        return check_name("process type", spelled)
    except InvalidName as e:
        name = normalise_type_name(spelled)
        if name != spelled and NAME_RE.fullmatch(name):
            raise InvalidName(f"invalid process type name {spelled!r}: a Procfile's "
                              f"{spelled!r} is named {name!r}") from None
        raise e from None


def resolve(specs: dict[str, tuple[str, int]], current: dict[str, int]) -> dict[str, int]:
    counts = {}
    for ptype, (op, n) in specs.items():
        base = current.get(ptype, 0)
        value = n if op == "=" else base + n if op == "+" else base - n
        try:
            counts[ptype] = check_count(ptype, value)
        except ValueError as e:
            raise CtlError(str(e), USAGE) from None
    return counts


def progress(instances: list[pb.Instance], counts: dict[str, int]) -> tuple[bool, str]:
    """(converged?, one-line summary) for the scaled types."""
    done, parts = True, []
    for ptype, want in sorted(counts.items()):
        rows = [i for i in instances if i.type == ptype]
        running = sum(1 for i in rows if i.state == InstanceState.RUNNING)
        others = len(rows) - running
        done = done and running == want and others == 0
        parts.append(f"{ptype} {running}/{want} running"
                     + (f" ({others} pending or stopping)" if others else ""))
    return done, ", ".join(parts)


def wait(client: Client, app: str, counts: dict[str, int], timeout: float, show: bool) -> bool:
    return watch(lambda: progress(client.instances(app), counts), timeout, show)[0]


def run(args: argparse.Namespace, client: Client) -> int:
    if bool(args.specs) == args.undo:
        raise CtlError("give TYPE=N... or --undo", USAGE)
    specs = parse_specs(args.specs)
    check_timeout(args.timeout)
    current: dict[str, int] = {}
    if any(op != "=" for op, _ in specs.values()):
        current = {t.type: t.desired for t in client.formation(args.app).types}
    counts = resolve(specs, current)
    reply = client.scale(args.app, counts, author(), args.undo)
    if args.undo:  # what it restored: the counts of the types the last change had changed
        last = client.scales(args.app)
        counts = dict(last[0].after) if last else dict(reply.counts)
    if not args.wait:
        if args.json:
            emit_json(dict(reply.counts))
        else:
            print("Scaled " + ", ".join(f"{t}={n}" for t, n in sorted(counts.items())))
        return 0
    ok = wait(client, args.app, counts, args.timeout, show=sys.stderr.isatty() and not args.json)
    if args.json:
        emit_json({"counts": dict(reply.counts), "converged": ok})
    if not ok:
        raise CtlError(f"timed out after {args.timeout:g}s: "
                       f"{progress(client.instances(args.app), counts)[1]}", RUNTIME)
    if not args.json:
        print("Scaled " + ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
              + ": all running")
    return 0
