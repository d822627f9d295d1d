"""The scheduler's read models under load: 100 simulated agents (formation-agent --simulate, a
benchmark aid) run 10,000 instances, then
  - GetFormation calls/s from 1 client and from 8 concurrent clients, and
  - how long a Scale (ctl.client.Client.scale, what `ctl scale` calls) takes to be acknowledged
    while 8 clients read ListInstances in a loop, against the same with no readers.

Every client that loads the scheduler is a process of its own (multiprocessing, spawn) running
a tight loop of the synchronous gRPC stub, so the measuring side's GIL is not the bottleneck.
The cluster runs mutual TLS, as the harness does by default: each reader connects once, as a
viewer (its own certificate of the cluster's CA, the channel `Cluster.channel` would open), and
keeps its connection, so the figures hold the per-message crypto but no handshake.
Everything is bounded in time and every process started here is joined or killed.

Just these: `python -m bench.controlplane --only read_models [--out FILE]` (about a minute).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import procs, simagents
from common.tls import TlsPaths
from tests.cluster import Cluster, wait_for

APP = "default"
SMALL = "s"          # a small type of its own, scaled 1 <-> 2 so the 10,000 stay
CALL_TIMEOUT = 10.0  # per RPC, in the clients
READY_TIMEOUT = 60.0  # for the client processes to start and make a first call
READER = ("viewer", "bench-reader")  # GetFormation and ListInstances are a viewer's to call


def _channel(address: str, tls: TlsPaths | None) -> Any:  # a grpc.Channel (untyped)
    """What Cluster.channel opens, in a process of its own: plaintext, or mutual TLS checking
    the scheduler's role (not its address)."""
    import grpc

    from common.identity import role_host
    from common.tls import load, target

    if tls is None:
        return grpc.insecure_channel(address)
    m = load(tls)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(m.ca, m.key, m.cert),
                               options=target(role_host("scheduler")))


def _client(address: str, tls: TlsPaths | None, method: str, ready, go, stop, counts,
            slot: int, duration: float) -> None:
    """One client process: a first call, then wait for `go` (holding the start time), then
    call as fast as it can until start + duration or `stop`; counts[slot] = calls completed
    in the window."""
    from proto import formation_pb2 as pb
    from proto import formation_pb2_grpc as pbg

    channel = _channel(address, tls)
    try:
        stub = pbg.ControlStub(channel)
        call, request = {"GetFormation": (stub.GetFormation, pb.GetFormationRequest(app=APP)),
                         "ListInstances": (stub.ListInstances,
                                           pb.ListInstancesRequest(app=APP))}[method]
        call(request, timeout=CALL_TIMEOUT)
        with ready.get_lock():
            ready.value += 1
        deadline = time.monotonic() + READY_TIMEOUT
        while go.value == 0.0:
            if time.monotonic() > deadline or stop.is_set():
                return
            time.sleep(0.001)
        start = go.value
        end = start + duration
        while time.monotonic() < start:
            time.sleep(0.0005)
        n = 0
        while time.monotonic() < end and not stop.is_set():
            call(request, timeout=CALL_TIMEOUT)
            n += 1
            counts[slot] = n
    finally:
        channel.close()


@contextmanager
def clients(c: Cluster, method: str, count: int, duration: float) -> Iterator[dict]:
    """Start `count` client processes; once all made a first call, they run for `duration`
    seconds (or until the block ends). Yields a dict that holds, after the block, the calls
    completed, the window's length and calls/s. The processes are joined or killed."""
    tls = c.tls_for(*READER)
    ctx = mp.get_context("spawn")
    ready, go = ctx.Value("i", 0), ctx.Value("d", 0.0)
    stop, counts = ctx.Event(), ctx.Array("q", count)
    workers = [ctx.Process(target=_client, daemon=True, name=f"bench-{method}-{i}",
                         args=(c.listen, tls, method, ready, go, stop, counts, i, duration))
             for i in range(count)]
    out: dict = {"method": method, "clients": count}
    try:
        for p in workers:
            p.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while ready.value < count:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in workers):
                raise RuntimeError(f"{method} clients did not start ({ready.value}/{count})")
            time.sleep(0.01)
        start = time.monotonic() + 0.1
        go.value = start
        time.sleep(0.1)
        yield out
        elapsed = min(time.monotonic(), start + duration) - start
        stop.set()  # a client finishes the call it is in, then stops
        for p in workers:
            p.join(timeout=CALL_TIMEOUT + 5)
        calls = [counts[i] for i in range(count)]
        out.update(calls=sum(calls), seconds=elapsed,
                   calls_per_second=sum(calls) / elapsed if elapsed > 0 else 0.0,
                   per_client=calls)
    finally:
        stop.set()
        for p in workers:
            p.join(timeout=CALL_TIMEOUT + 5)
        for p in workers:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def rate(c: Cluster, method: str, count: int, duration: float) -> dict:
    """calls/s of `method` from `count` concurrent client processes for `duration` seconds."""
    with clients(c, method, count, duration) as out:
        time.sleep(duration)
    if any(c == 0 for c in out["per_client"]):
        raise RuntimeError(f"a {method} client completed no call: {out['per_client']}")
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def scale_latency(c: Cluster, scales: int, gap: float) -> dict:
    """Latency of `scales` Scale RPCs through ctl's client, alternating SMALL between 1 and 2,
    `gap` seconds apart: with 10,000 instances the reconcile a scale triggers costs the
    scheduler about 0.15 s of CPU, and the next scale should mostly not wait behind it."""
    times = []
    for i in range(scales):
        t0 = time.perf_counter()
        c.client.scale(APP, {SMALL: 1 + i % 2})
        times.append(time.perf_counter() - t0)
        time.sleep(gap)
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "max": max(times),
            "n": len(times), "all": times}


def scale_under_readers(c: Cluster, readers: int, scales: int, gap: float) -> dict:
    budget = scales * (gap + 2 * CALL_TIMEOUT) + 30  # the readers outlive the scales
    with clients(c, "ListInstances", readers, budget) as load:
        out = scale_latency(c, scales, gap)
    out.update(readers=readers, reader_calls=load["calls"],
               reader_calls_per_second=load["calls_per_second"])
    return out


def simulated_cluster(tmp: Path, agents: int, instances: int, types: int = 10,
                      tls: bool = True):
    """A Cluster (enter it) whose Procfile has `types` types t0… and SMALL."""
    d = tmp / ("readmodels" if tls else "readmodels-plaintext")
    d.mkdir(exist_ok=True)
    (d / "Procfile").write_text("".join(f"t{i}: sleep 1\n" for i in range(types))
                                + f"{SMALL}: sleep 1\n")
    return d, Cluster(agents=0, mode="local", workdir=str(d), tls=tls)


def tails(c: Cluster, lines: int = 15) -> None:
    """The end of the scheduler's and the simulated agents' logs, for a set-up that failed
    (the cluster's directory goes with it)."""
    for name in ("scheduler", "simulated"):
        path = Path(c.tmp) / f"{name}.log"
        if path.exists():
            print(f"--- {path}, last {lines} lines:",
                  *path.read_text(errors="replace").splitlines()[-lines:], sep="\n",
                  file=sys.stderr)


def run(tmp: Path, agents: int = 100, instances: int = 10_000, types: int = 10,
        clients_: int = 8, duration: float = 5.0, scales: int = 30, gap: float = 0.4,
        tls: bool = True) -> dict:
    def say(what: str) -> None:
        print(f"[control plane] read models: {what} ...", file=sys.stderr, flush=True)

    d, cluster = simulated_cluster(tmp, agents, instances, types, tls)
    total = instances + 1
    with cluster as c:
        try:
            simagents.start(c, agents, instances // agents * 2)
            c.ctl("deploy", str(d / "Procfile"))
            c.client.scale(APP, {**{f"t{i}": instances // types for i in range(types)},
                                 SMALL: 1})
            wait_for(lambda: sum(t.running for t in c.client.formation(APP).types) == total,
                     120, interval=0.1, what=f"{total} simulated instances running")
        except Exception:
            tails(c)
            raise
        out: dict = {"agents": agents, "instances": total, "tls": c.certs is not None,
                     "load_before": os.getloadavg()}
        sched = c.parts["scheduler"].pid

        def phase(key: str, what: str, fn, *args) -> None:
            say(what)
            cpu0 = procs.stat(sched)[0]
            out[key] = fn(*args)
            out[key]["scheduler_cpu_seconds"] = procs.stat(sched)[0] - cpu0

        phase("get_formation_1", f"GetFormation, 1 client, {duration:g} s",
              rate, c, "GetFormation", 1, duration)
        phase("get_formation_n", f"GetFormation, {clients_} clients, {duration:g} s",
              rate, c, "GetFormation", clients_, duration)
        for g in (out["get_formation_1"], out["get_formation_n"]):
            g["scheduler_cpu_ms_per_call"] = g["scheduler_cpu_seconds"] / g["calls"] * 1000
        phase("scale_idle", f"{scales} scales, no readers", scale_latency, c, scales, gap)
        phase("scale_readers", f"{scales} scales, {clients_} ListInstances readers",
              scale_under_readers, c, clients_, scales, gap)
        out["load_after"] = os.getloadavg()
        c.client.scale(APP, {**{f"t{i}": 0 for i in range(types)}, SMALL: 0})
        wait_for(lambda: not c.client.instances(APP), 120, interval=0.1, what="scale to 0")
    return out

