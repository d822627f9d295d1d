"""Lost-agent failover, measured: from `kill -9` of an agent to (a) `ctl agents` showing it
down and (b) all of its instances running elsewhere (checked in /proc on the hosts).

    python -m bench.failover [--runs 10] [--ttl 10 2] [--json FILE]

Runs on the multi-host harness (network namespaces where possible). Prints median and worst.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common.states import AgentState, InstanceState
from tests.cluster import Cluster, wait_for
from tests.cluster.harness import default_mode


def one_ttl(ttl: float, runs: int, agents: int = 3, per_agent: int = 4) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    (tmp / "Procfile").write_text("svc: sleep 100000\n")
    detect, replace = [], []
    with Cluster(agents=agents, agent_ttl=ttl, mode=default_mode(), workdir=str(tmp),
                 capacity=per_agent * agents) as c:
        c.ctl("deploy", str(tmp / "Procfile"))
        total = agents * per_agent
        c.ctl("scale", f"svc={total}", "--wait", "--timeout", "30")
        for run in range(runs):
            victim = f"agent-{run % agents + 1}"
            lost = {i for i, inst in c.instances().items() if inst.agent == victim}
            if not lost:  # rebalance by cycling the count, so the victim holds some
                c.ctl("scale", "svc=0", "--wait")
                c.ctl("scale", f"svc={total}", "--wait")
                lost = {i for i, inst in c.instances().items() if inst.agent == victim}
            t0 = time.monotonic()
            c.kill_agent(victim)
            down_at = None

            def replaced(victim: str = victim, lost: set[str] = lost) -> bool:
                nonlocal down_at
                if down_at is None and any(a.name == victim and a.state == AgentState.DOWN
                                           for a in c.client.agents()):
                    down_at = time.monotonic()
                inst = c.instances()
                ok = all(inst[i].state == InstanceState.RUNNING and inst[i].agent != victim for i in lost)
                if not ok:
                    return False
                truth = c.truth()
                return all(any(i in ids for h, ids in truth.items() if h != victim)
                           for i in lost)
            wait_for(replaced, ttl + 30, interval=0.01, what="replacements")
            done = time.monotonic()
            detect.append((down_at or done) - t0)
            replace.append(done - t0)
            print(f"  ttl {ttl:g}s run {run + 1}: down after {detect[-1]:.2f}s, "
                  f"{len(lost)} replaced after {replace[-1]:.2f}s", file=sys.stderr)
            c.start_agent(victim)

            def back(victim: str = victim) -> bool:
                return any(a.name == victim and a.state == AgentState.READY and a.connected
                           for a in c.client.agents())
            wait_for(back, 20)
    summary = {"ttl": ttl, "runs": runs, "mode": default_mode(),
               "detect": {"median": statistics.median(detect), "worst": max(detect),
                          "all": detect},
               "replace": {"median": statistics.median(replace), "worst": max(replace),
                           "all": replace}}
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--ttl", type=float, nargs="+", default=[10.0, 2.0])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = [one_ttl(ttl, args.runs) for ttl in args.ttl]
    for r in results:
        print(f"agent_ttl {r['ttl']:g}s ({r['runs']} runs, {r['mode']}): "
              f"down after {r['detect']['median']:.2f}s median / {r['detect']['worst']:.2f}s worst; "
              f"all replacements running after {r['replace']['median']:.2f}s median / "
              f"{r['replace']['worst']:.2f}s worst")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
