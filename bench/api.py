"""`ctl scale c=+1` → running, through the API, plaintext and over mutual TLS side by side.

Two one-agent clusters run at once, one plaintext (`Cluster(tls=False)`) and one with mutual TLS
(the harness's default); the rounds alternate between them (and which goes first), so a busy
machine slows both alike. Measured for each:
  - Scale c=N → the instance c.N reported running, over ctl's client on one open connection;
  - GetFormation on that open connection: one small call, where TLS adds only the symmetric
    crypto of each message;
  - a new connection and one GetFormation call (ctl.client.Client made afresh: reading and
    checking the certificate files, connecting, the TLS handshake, the call), which is what
    every `ctl` command pays, since ctl opens one connection per command.

Just this: `python -m bench.api` (about half a minute), or `python -m bench.run --only api`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common.states import InstanceState
from ctl.client import Client
from tests.cluster import Cluster, wait_for

APP = "default"
MODES = (("plaintext", False), ("tls", True))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def figures(times: list[float]) -> dict:
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99), "min": min(times),
            "max": max(times), "mean": statistics.fmean(times), "n": len(times), "all": times}


def scale_one(c: Cluster, count: int) -> float:
    """Seconds from Scale c=count to the instance c.count reported running."""
    client, iid = c.client, f"c.{count}"
    t0 = time.perf_counter()
    client.scale(APP, {"c": count})
    wait_for(lambda: any(i.id == iid and i.state == InstanceState.RUNNING
                         for i in client.instances(APP)), 30, interval=0.001,
             what=f"{iid} running")
    return time.perf_counter() - t0


def open_call(c: Cluster) -> float:
    """One GetFormation on the cluster's open client connection."""
    t0 = time.perf_counter()
    c.client.formation(APP)
    return time.perf_counter() - t0


def new_connection(c: Cluster) -> float:
    """A new client (its certificate files read and checked), connect, handshake, one call."""
    t0 = time.perf_counter()
    client = Client(c.listen, c.tls_for("operator", "tester"), timeout=5)
    try:
        client.formation(APP)
    finally:
        client.close()
    return time.perf_counter() - t0


def alternate(clusters: dict[str, Cluster], rounds: int,
              one: Callable[[Cluster, int], float]) -> dict[str, dict]:
    times: dict[str, list[float]] = {mode: [] for mode in clusters}
    for r in range(1, rounds + 1):
        for mode in (list(clusters) if r % 2 else list(reversed(clusters))):
            times[mode].append(one(clusters[mode], r))
    return {mode: figures(t) for mode, t in times.items()}


def run(tmp: Path, rounds: int = 30, calls: int = 200, connections: int = 50) -> dict:
    print("[api] scale +1 → running, plaintext and TLS ...", file=sys.stderr, flush=True)
    d = tmp / "api"
    d.mkdir(exist_ok=True)
    (d / "Procfile").write_text("c: sleep 99999\n")
    with ExitStack() as stack:
        clusters = {mode: stack.enter_context(Cluster(agents=1, capacity=rounds + 10,
                                                      mode="local", workdir=str(d), tls=tls))
                    for mode, tls in MODES}
        for c in clusters.values():
            c.ctl("deploy", str(d / "Procfile"))
            c.client.scale(APP, {"c": 0})
        for mode in clusters:  # a first call of each kind, not measured
            open_call(clusters[mode])
            new_connection(clusters[mode])
        out = {"rounds": rounds,
               "scale": alternate(clusters, rounds, scale_one),
               "open_call": alternate(clusters, calls, lambda c, _: open_call(c)),
               "new_connection": alternate(clusters, connections,
                                           lambda c, _: new_connection(c))}
        for c in clusters.values():
            c.client.scale(APP, {"c": 0})
    return out


def main() -> None:
    """Just this part: prints its section of docs/benchmarks.md and the targets it meets."""
    p = argparse.ArgumentParser(prog="python -m bench.api", description=main.__doc__)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    try:
        r = {"api_round_trip": run(tmp, args.rounds)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from bench import report
    print("\n".join(report.api_round_trip(r["api_round_trip"]) + report.targets(r)))


if __name__ == "__main__":
    main()
