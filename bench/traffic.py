"""The load-balancer edge (formation-lb), measured on a real cluster (1 agent, mutual TLS).

Throughput: requests/s that `wrk` (keep-alive, 2 threads, 32 connections) gets through
  - formation-lb, balancing to one instance it was told of by the scheduler;
  - a plain HAProxy with the same configuration (lb/haproxy.py's) and that instance as a static
    server line: what formation-lb should cost, HAProxy's own overhead and nothing more;
  - the instance itself, no proxy (the floor).
The instance is itself an HAProxy answering 200 "ok" from memory, so the backend is not what is
measured. The three alternate, round after round, on the same instance.

Scale-up to traffic: a client sends requests through formation-lb all the time (the tests'
tests/cluster/traffic.py, 4 threads); each round times, from a real `ctl scale web+1` process
(as an operator runs it), until `ctl ps` shows the new instance running, and until the first
request it answers through formation-lb; then scales back down.

Just this: `python -m bench.traffic`, or `python -m bench.run --only traffic`. Needs haproxy and
wrk (`apt-get install haproxy wrk`).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common.haproxy import haproxy_binary
from ctl.localcluster import Launch, Part, free_port, wait_port
from lb.haproxy import config, max_conn
from tests.cluster import Cluster, procs, wait_for
from tests.cluster.harness import EXAMPLES
from tests.cluster.traffic import Load, launcher, start_lb

STATIC = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend answer
    bind 127.0.0.1:"${PORT}"
    http-request return status 200 content-type text/plain string "ok"
"""
WRK_SECONDS = 5
NEW = "web.3"  # the instance `ctl scale web+1` adds to web=2


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "all": values}


def wrk(port: int) -> float:
    """Requests/s of one wrk run against 127.0.0.1:port."""
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{WRK_SECONDS}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=WRK_SECONDS + 30, check=True)
    if "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise AssertionError(f"wrk saw errors:\n{out.stdout}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout)
    if match is None:
        raise AssertionError(f"no Requests/sec in wrk's output:\n{out.stdout}")
    return float(match.group(1))


def plain_haproxy(launch: Launch, tmp: Path, port: int, server: str) -> Part:
    """HAProxy with formation-lb's own configuration and the instance as a static server."""
    cfg = config("127.0.0.1", port, str(tmp / "plain.sock"), max_conn()) + \
        f"    server one {server} check inter 1s fall 2 rise 1\n"
    (tmp / "plain.cfg").write_text(cfg)
    part = launch.start("plain-haproxy", [haproxy_binary() or "haproxy", "-db", "-f",
                                          str(tmp / "plain.cfg")])
    wait_port("127.0.0.1", port, 20, part.proc)
    return part


def throughput(c: Cluster, launch: Launch, d: Path, rounds: int) -> dict:
    (d / "Procfile").write_text("web: haproxy -db -f static.cfg\n")
    (d.parent / "static.cfg").write_text(STATIC)  # where instances run: the agent's workdir
    c.ctl("deploy", str(d / "Procfile"), app="static")
    c.ctl("scale", "web=1", "--wait", "--timeout", "30", app="static")
    inst = c.instances("static")["web.1"]
    lb_port, plain_port = free_port(), free_port()
    parts: list[Part] = []
    try:
        parts.append(start_lb(c, lb_port, "static", name="lb-static"))
        parts.append(plain_haproxy(launch, d, plain_port, f"127.0.0.1:{inst.port}"))
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{lb_port}/",
                                                timeout=2).status == 200, 20,
                 what="formation-lb answering")
        seen: dict[str, list[float]] = {"formation_lb": [], "haproxy": [], "direct": []}
        ports = {"formation_lb": lb_port, "haproxy": plain_port, "direct": inst.port}
        order = list(seen)
        for r in range(rounds):
            for name in order[r % 3:] + order[:r % 3]:
                seen[name].append(wrk(ports[name]))
        return {name: summary(v) for name, v in seen.items()}
    finally:
        for p in parts:
            p.stop()


def scale_to_traffic(c: Cluster, d: Path, rounds: int) -> dict:
    shutil.copy(f"{EXAMPLES}/web.py", d / "web.py")
    (d / "Procfile").write_text("web: python3 web.py\n")
    c.ctl("deploy", str(d / "Procfile"))
    c.ctl("scale", "web=2", "--wait", "--timeout", "30")
    port = free_port()
    part = start_lb(c, port)
    running, traffic = [], []
    try:
        with Load("127.0.0.1", port, keep_alive=2, fresh=2, posts=False) as load:
            wait_for(lambda: len(load.answered_by(0)) == 2, 20, what="both web answering")
            warm = load.mark()  # (before its first set, formation-lb has no server: 503)
            for _ in range(rounds):
                started = time.monotonic()
                c.ctl("scale", "web+1")
                pid: int = wait_for(lambda: NEW in c.running() and c.running()[NEW].pid, 30,
                                    interval=0.01)
                running.append(time.monotonic() - started)
                wait_for(lambda s=started: NEW in load.answered_by(s),  # type: ignore[misc]
                         30, interval=0.005)
                first = min(r.at for r in load.since(started) if r.said.endswith(NEW))
                traffic.append(first - started)
                c.ctl("scale", "web=2")
                wait_for(lambda p=pid: not procs.alive(p), 30)  # type: ignore[misc]
            failed = load.failures(warm)
    finally:
        part.stop()
    return {"running": summary(running), "traffic": summary(traffic),
            "failed_requests": len(failed), "requests": len(load.since(warm)),
            "failed_examples": [r.said for r in failed[:10]]}


def run(tmp: Path, rounds: int = 5) -> dict:
    if haproxy_binary() is None or shutil.which("wrk") is None:
        print("[traffic] skipped: needs haproxy and wrk (apt-get install haproxy wrk)",
              file=sys.stderr, flush=True)
        return {}
    print(f"[traffic] formation-lb: throughput and scale-up to traffic, {rounds} rounds ...",
          file=sys.stderr, flush=True)
    d = tmp / "traffic"
    (d / "static").mkdir(parents=True, exist_ok=True)
    with Cluster(agents=1, mode="local", workdir=str(d)) as c:
        launch = launcher(c)
        out: dict[str, Any] = {"throughput": throughput(c, launch, d / "static", rounds)}
        out.update(scale_to_traffic(c, d, rounds))
    out.update(rounds=rounds, wrk=f"-t2 -c32 -d{WRK_SECONDS}s")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-traffic-"))
    print(json.dumps(run(tmp, args.rounds), indent=2))


if __name__ == "__main__":
    main()
