"""The control plane at scale: pure placement on 1,000 agents, and a real scheduler and etcd
driving 200 simulated agents (formation-agent --simulate, a benchmark aid) to 10,000 instances,
plaintext and over mutual TLS side by side."""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import procs, simagents
from scheduler.placement import AgentView, plan
from tests.cluster import Cluster, wait_for


def placement(rounds: int = 5) -> dict:
    agents = {f"agent-{i}": AgentView(f"agent-{i}", 200) for i in range(1000)}
    desired = {("app", f"type{t}"): 10_000 for t in range(10)}
    bigger = {k: 11_000 for k in desired}
    fresh, change = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        p = plan(desired, {"app": 1}, agents, {})
        fresh.append(time.perf_counter() - t0)
        after = p.assignments_after({}, {"app": 1})
        t0 = time.perf_counter()
        plan(bigger, {"app": 1}, agents, after)
        change.append(time.perf_counter() - t0)
    return {"fresh_100k_seconds": statistics.median(fresh), "fresh_all": fresh,
            "change_10pct_seconds": statistics.median(change), "change_all": change,
            "per_1000_fresh_ms": statistics.median(fresh) / 100 * 1000,
            "per_1000_change_ms": statistics.median(change) / 10 * 1000}


def etcd_requests(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_handled_total{"))


MODES = (("plaintext", False), ("tls", True))


@contextmanager
def simulated_cluster(d: Path, tls: bool, agents: int, per_agent: int) -> Iterator[Cluster]:
    """A cluster (plaintext or mutual TLS) with `agents` simulated agents and d/Procfile."""
    with Cluster(agents=0, mode="local", workdir=str(d), tls=tls) as c:
        simagents.start(c, agents, per_agent)
        c.ctl("deploy", str(d / "Procfile"))
        yield c


def cycle(c: Cluster, instances: int, types: int) -> dict:
    """One scale 0 → `instances` reported running → 0, measured."""
    sched = c.parts["scheduler"].pid
    etcd = c.etcd_endpoints[0]
    cpu0, _, _ = procs.stat(sched)
    req0 = etcd_requests(etcd)
    counts = {f"t{i}": instances // types for i in range(types)}
    t0 = time.monotonic()
    c.client.scale("default", counts)
    wait_for(lambda: sum(t.running for t in c.client.formation("default").types)
             == instances, 300, interval=0.05, what="all simulated instances running")
    up = time.monotonic() - t0
    cpu1, _, peak = procs.stat(sched)
    req1 = etcd_requests(etcd)
    t0 = time.monotonic()
    c.client.scale("default", {t: 0 for t in counts})
    wait_for(lambda: not c.client.instances("default"), 300, interval=0.05)
    return {"up": up, "down": time.monotonic() - t0, "cpu": cpu1 - cpu0, "peak": peak,
            "etcd": req1 - req0}


def simulated(tmp: Path, agents: int = 200, instances: int = 10_000, types: int = 10,
              rounds: int = 3) -> dict:
    """The same scale-up on two clusters side by side, one plaintext and one over mutual TLS,
    `rounds` times each, alternating (and alternating which goes first), so that a busy machine
    slows both alike. Each mode: medians, and every round under "all"."""
    d = tmp / "simulated"
    d.mkdir(exist_ok=True)
    (d / "Procfile").write_text("".join(f"t{i}: sleep 1\n" for i in range(types)))
    per_agent = instances // agents * 2
    runs: dict[str, list[dict]] = {mode: [] for mode, _ in MODES}
    with ExitStack() as stack:
        clusters = {mode: stack.enter_context(simulated_cluster(d, tls, agents, per_agent))
                    for mode, tls in MODES}
        for r in range(rounds):
            for mode in (list(clusters) if r % 2 == 0 else list(reversed(clusters))):
                runs[mode].append(cycle(clusters[mode], instances, types))
                print(f"  {mode}: {runs[mode][-1]['up']:.3f} s to running", file=sys.stderr,
                      flush=True)
    out: dict = {"agents": agents, "instances": instances, "rounds": rounds}
    for mode, cycles in runs.items():
        up = [x["up"] for x in cycles]
        out[mode] = {"seconds_to_running": statistics.median(up), "min": min(up),
                     "max": max(up), "placements_per_second": instances / statistics.median(up),
                     "seconds_to_zero": statistics.median(x["down"] for x in cycles),
                     "scheduler_cpu_seconds": statistics.median(x["cpu"] for x in cycles),
                     "scheduler_peak_rss_mib": max(x["peak"] for x in cycles) / 2**20,
                     "etcd_requests": statistics.median(x["etcd"] for x in cycles),
                     "all": cycles}
    out["tls_vs_plaintext"] = (out["tls"]["seconds_to_running"]
                               / out["plaintext"]["seconds_to_running"])
    return out


PARTS = ("placement", "simulated", "read_models")


def run_all(tmp: Path, parts: tuple[str, ...] = PARTS) -> dict:
    out: dict = {}
    if "placement" in parts:
        print("[control plane] placement ...", file=sys.stderr, flush=True)
        out["placement"] = placement()
    if "simulated" in parts:
        print("[control plane] 200 simulated agents, plaintext and TLS ...", file=sys.stderr, flush=True)
        out["simulated"] = simulated(tmp)
    if "read_models" in parts:
        from bench import readmodels
        out["read_models"] = readmodels.run(tmp)  # mutual TLS, and the same plaintext:
        out["read_models_plaintext"] = readmodels.run(tmp, tls=False)
    return out


def main() -> None:
    """Just the control-plane benchmarks (a minute or two): prints their table and targets;
    writes the raw figures only with --out, and never docs/benchmarks.md."""
    p = argparse.ArgumentParser(prog="python -m bench.controlplane", description=main.__doc__)
    p.add_argument("--only", action="append", choices=PARTS,
                   help="run only this part (repeatable); default: all")
    p.add_argument("--out", type=Path, help="write the raw figures here as JSON")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    try:
        r = {"control_plane": run_all(tmp, tuple(args.only or PARTS))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))
    from bench import report
    print("\n".join(report.control_plane(r["control_plane"]) + report.targets(r)))


if __name__ == "__main__":
    main()
