"""An agent upgrade in place, measured: one agent with N instances (`sleep` and a worker that
prints a numbered line every 10 ms), SIGHUP, then timed to (a) the new image's "upgraded in
place" and (b) its link to the scheduler up again (the scheduler answered). Every pid must stay the same
and the numbered lines must go on without a gap. A plain restart of the agent (`systemctl
restart`: every instance stopped and started again) is measured beside it as the baseline.

    python -m bench.upgrade [--instances 200] [--runs 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster import Cluster, wait_for

COUNTER = "import time\nn = 0\nwhile True:\n    n += 1\n    print('count', n, flush=True)\n" \
          "    time.sleep(0.01)\n"


def counts(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"\| count (\d+)$", log, re.M)]


def said(c: Cluster, text: str) -> int:
    """How many times the agent's log says text."""
    return c.log("agent-1").count(text)


def says_more(c: Cluster, text: str, than: int) -> bool:
    return said(c, text) > than


def restarted_all(c: Cluster, old: set[int], n: int) -> bool:
    running = c.running()
    return len(running) == n and not {x.pid for x in running.values()} & old


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    (tmp / "count.py").write_text(COUNTER)
    (tmp / "Procfile").write_text("worker: sleep 100000\ncount: python3 count.py\n")
    adopted, reconnected, restarted = [], [], []
    with Cluster(agents=1, capacity=args.instances + 10, workdir=str(tmp)) as c:
        c.ctl("deploy", str(tmp / "Procfile"))
        c.ctl("scale", f"worker={args.instances - 1}", "count=1", "--wait", "--timeout", "120")
        before = {i: x.pid for i, x in c.running().items()}
        for run in range(args.runs):
            upgrades = said(c, "upgraded in place")
            links = said(c, "connected to scheduler")
            t0 = time.monotonic()
            c.parts["agent-1"].proc.send_signal(signal.SIGHUP)
            wait_for(functools.partial(says_more, c, "upgraded in place", upgrades), 60,
                     interval=0.005, what="the upgrade")
            adopted.append(time.monotonic() - t0)
            wait_for(functools.partial(says_more, c, "connected to scheduler", links), 60,
                     interval=0.005, what="the link again")
            reconnected.append(time.monotonic() - t0)
            after = {i: x.pid for i, x in c.running().items()}
            if after != before:
                raise RuntimeError(f"an instance changed: {before} -> {after}")
            print(f"  run {run + 1}: adopted after {adopted[-1]:.3f}s, connected again after "
                  f"{reconnected[-1]:.3f}s", file=sys.stderr)
        seen = counts(c.log("agent-1"))
        if seen != list(range(seen[0], seen[0] + len(seen))):
            raise RuntimeError("a numbered line was lost")
        for _ in range(min(args.runs, 3)):  # the baseline: a restart of the agent
            old = {x.pid for x in c.running().values()}
            t0 = time.monotonic()
            c.restart_agent("agent-1")
            wait_for(functools.partial(restarted_all, c, old, args.instances), 120,
                     interval=0.02, what="every instance started again")
            restarted.append(time.monotonic() - t0)
    result = {"instances": args.instances, "runs": args.runs,
              "adopted": {"median": statistics.median(adopted), "worst": max(adopted)},
              "reconnected": {"median": statistics.median(reconnected),
                              "worst": max(reconnected)},
              "restart": {"median": statistics.median(restarted), "worst": max(restarted)}}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
