"""Leader failover, measured: three scheduler replicas, three agents, a three-member etcd;
`kill -9` of the leader, then at once `ctl scale worker+1` (given all three addresses), timed
to (a) ctl's acknowledgement and (b) the new instance running (its pid checked in /proc).
No other instance's pid may change. The killed replica is started again between runs.

    python -m bench.leader [--runs 10] [--ttl 5 2] [--json FILE]

Runs on the multi-host harness (network namespaces where possible). Prints median and worst.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.states import InstanceState
from tests.cluster import Cluster, procs, wait_for
from tests.cluster.harness import ROOT, default_mode


def healthy(c: Cluster) -> bool:
    found = c.client.schedulers()
    return len(found) == len(c.scheduler_names) and all(r.healthy for r in found) \
        and sum(r.leader for r in found) == 1


def one_ttl(ttl: int, runs: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    (tmp / "Procfile").write_text("worker: sleep 100000\n")
    acked, running = [], []
    with Cluster(agents=3, schedulers=3, etcd_members=3, leader_ttl=ttl,
                 mode=default_mode(), workdir=str(tmp)) as c:
        c.ctl("deploy", str(tmp / "Procfile"))
        c.ctl("scale", "worker=3", "--wait", "--timeout", "30")
        for run in range(runs):
            wait_for(lambda: healthy(c), 30, interval=0.2, what="three healthy replicas")
            n = len(c.instances())
            before = {i: x.pid for i, x in c.running().items()}
            leader = c.leader()
            env = {**os.environ, "FORMATION_SCHEDULER": c.listen,
                   "FORMATION_APP": "default", **c.tls_env()}
            t0 = time.monotonic()
            c.parts.pop(leader).stop(signal.SIGKILL)
            r = subprocess.run([sys.executable, "-m", "ctl", "scale", "worker+1"], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
            acked.append(time.monotonic() - t0)
            if r.returncode != 0:
                raise RuntimeError(f"ctl scale failed: {r.stderr.strip()}")
            new = f"worker.{n + 1}"

            def up(new: str = new) -> bool:
                inst = c.instances().get(new)
                return inst is not None and inst.pid > 0 and procs.alive(inst.pid) \
                    and inst.state == InstanceState.RUNNING
            wait_for(up, 60, interval=0.01, what=f"{new} running")
            running.append(time.monotonic() - t0)
            # (the others' agents may not have reconnected to the new leader yet: once they
            # have, each instance must be the same process as before)
            def reported(before: dict[str, int] = before) -> bool:
                return set(before) <= set(c.running())
            wait_for(reported, 30, what="every agent reporting")
            after = {i: x.pid for i, x in c.running().items()}
            if {i: after.get(i) for i in before} != before:
                raise RuntimeError(f"an instance restarted: {before} -> {after}")
            print(f"  leader ttl {ttl}s run {run + 1}: {leader} killed; scale acknowledged "
                  f"after {acked[-1]:.2f}s, {new} running after {running[-1]:.2f}s",
                  file=sys.stderr)
            c.start_scheduler(leader)
    return {"ttl": ttl, "runs": runs, "mode": default_mode(),
            "acknowledged": {"median": statistics.median(acked), "worst": max(acked),
                             "all": acked},
            "running": {"median": statistics.median(running), "worst": max(running),
                        "all": running}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--ttl", type=int, nargs="+", default=[5, 2])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = [one_ttl(ttl, args.runs) for ttl in args.ttl]
    for r in results:
        print(f"leader ttl {r['ttl']}s ({r['runs']} runs, {r['mode']}): scale acknowledged "
              f"after {r['acknowledged']['median']:.2f}s median / "
              f"{r['acknowledged']['worst']:.2f}s worst; its instance running after "
              f"{r['running']['median']:.2f}s median / {r['running']['worst']:.2f}s worst")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
