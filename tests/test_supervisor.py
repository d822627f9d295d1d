"""The supervisor with real children: two copies of one instance id at two releases (a rolling
deploy's surge copy beside the old one) or at one release in two generations (a `ctl restart`'s),
the stop-then-start of a swap, at_most_once ids that never run twice, and the metrics of two
copies. The truth comes from /proc and from a file each
child writes its start and exit to; every wait polls with a deadline; each test ends by
stopping everything and finding no child of its own left."""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import base_environment
from agent.launcher import OsLauncher
from agent.link import SchedulerLink
from agent.logs import LogSink
from agent.metrics import AgentCollector
from agent.ports import PortPool
from agent.supervisor import Supervisor
from common.states import InstanceState
from proto import formation_pb2 as pb
from tests.cluster import procs

MARK = "FORMATION_SUPERVISOR_TEST"  # in every child's environment: how teardown finds leaks

# A copy that serves on $PORT (web's default check is tcp), appends "started R" to the file
# named by its argument and says hello on its output; on SIGTERM it takes a moment before it
# appends "exited R" and exits: a copy started before an earlier one was gone would show up
# between that one's two lines.
RECORDER = """\
import os, signal, socket, sys, time
release = os.environ["FORMATION_RELEASE"]

def note(what):
    with open(sys.argv[1], "a") as f:
        f.write(f"{what} {release}\\n")

def bye(*_):
    time.sleep(0.3)
    note("exited")
    sys.exit(0)

signal.signal(signal.SIGTERM, bye)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(os.environ["PORT"])))
server.listen()
note("started")
print("hello from", release, flush=True)
while True:
    server.accept()[0].close()
"""


def recorder(tmp_path: Path) -> tuple[str, Path]:
    """The command of a recording copy, and the file it records to."""
    script, record = tmp_path / "recorder.py", tmp_path / "record"
    script.write_text(RECORDER)
    return f"{sys.executable} {script} {record}", record


async def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


def copy(release: int, command: str, iid: str = "web.1", **kw) -> pb.Assignment:
    return pb.Assignment(app="app", id=iid, type=iid.split(".")[0], release=release,
                         command=command, stop_timeout=10, **kw)


@contextlib.asynccontextmanager
async def supervised(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, list[pb.InstanceStatus]]]:
    """A supervisor of real children (process groups, no guardian) and the statuses it
    reported; afterwards every instance is stopped and none of its processes may be left."""
    token = uuid.uuid4().hex
    lo = random.randrange(30_000, 32_000, 50)  # below the usual ephemeral ports
    seen: list[pb.InstanceStatus] = []
    sup = Supervisor(OsLauncher(), LogSink(io.BytesIO()), PortPool(range(lo, lo + 50)),
                     str(tmp_path), {**base_environment(), MARK: token}, seen.append)
    try:
        yield sup, seen
    finally:
        await asyncio.wait_for(sup.stop_all(), 30)
        left = procs.with_env(MARK, token)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        assert not left, f"processes left after stop_all: {left}"
        assert not sup.runners and not sup.stopping and not sup.leaving
        assert not sup.ports.used


def running(sup: Supervisor, release: int, iid: str = "web.1", generation: int = 0) -> int:
    """The pid of the copy of iid at (release, generation) if it is running, else 0."""
    r = sup.runners.get(("app", iid, release, generation))
    return r.pid if r is not None and r.state == InstanceState.RUNNING and r.pid else 0


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_second_release_of_an_id_runs_beside_the_first_then_the_first_alone_goes(
        tmp_path):
    command, record = recorder(tmp_path)
    async with supervised(tmp_path) as (sup, seen):
        sup.apply([copy(1, command)])
        await until(lambda: running(sup, 1), what="web.1 v1 running")
        v1 = running(sup, 1)

        # (a) the surge copy: v2 beside v1, both running, each its own pid, port and group.
        sup.apply([copy(1, command), copy(2, command)])
        await until(lambda: running(sup, 2), what="web.1 v2 running")
        v2 = running(sup, 2)
        assert running(sup, 1) == v1 and procs.alive(v1) and procs.alive(v2) and v1 != v2
        assert procs.pgid(v1) == v1 and procs.pgid(v2) == v2
        ports = {s.release: s.port for s in sup.statuses()}
        assert set(ports) == {1, 2} and ports[1] != ports[2]
        for pid, release in ((v1, 1), (v2, 2)):
            env = procs.environ(pid)
            assert env["PORT"] == str(ports[release]) and env["FORMATION_INSTANCE"] == "web.1"
            assert env["FORMATION_RELEASE"] == str(release)
            with socket.create_connection(("127.0.0.1", ports[release]), timeout=5):
                pass  # each copy serves on its own port
        assert {(s.id, s.release) for s in seen if s.state == InstanceState.RUNNING} == {
            ("web.1", 1), ("web.1", 2)}
        assert lines(record) == ["started 1", "started 2"]
        def buffered() -> set[str]:
            return {e.text for e in sup.sink.buffers[("app", "web.1")].lines}
        await until(lambda: buffered() == {"hello from 1", "hello from 2"},
                    what="both copies' output under web.1")

        # (b) the old copy retired: only v1 stops, v2 runs on untouched.
        sup.apply([copy(2, command)])
        await until(lambda: not sup.stopping, what="v1's stop")
        assert not procs.alive(v1) and procs.alive(v2) and running(sup, 2) == v2
        assert list(sup.runners) == [("app", "web.1", 2, 0)]
        stopped = [s for s in seen if s.state == InstanceState.STOPPED]
        assert [(s.id, s.release) for s in stopped] == [("web.1", 1)]
        assert lines(record) == ["started 1", "started 2", "exited 1"]
        assert ports[1] not in sup.ports.used and ports[2] in sup.ports.used
        assert ("app", "web.1") in sup.sink.buffers  # v2 still writes there

        await sup.stop_all()
        assert ("app", "web.1") not in sup.sink.buffers  # gone with the last copy


async def test_swapping_one_release_for_another_stops_the_old_copy_before_starting_the_new(
        tmp_path):
    command, record = recorder(tmp_path)
    async with supervised(tmp_path) as (sup, seen):
        sup.apply([copy(1, command)])
        await until(lambda: running(sup, 1), what="web.1 v1 running")
        v1 = running(sup, 1)
        sup.apply([copy(2, command)])
        await until(lambda: running(sup, 2), what="web.1 v2 running")
        assert not procs.alive(v1)
        # v1 took 0.3 s to exit after SIGTERM: a v2 started at once would have written first.
        assert lines(record) == ["started 1", "exited 1", "started 2"]
        v2_first = next(i for i, s in enumerate(seen) if s.release == 2)
        v1_stopped = next(i for i, s in enumerate(seen)
                          if s.release == 1 and s.state == InstanceState.STOPPED)
        assert v1_stopped < v2_first


async def test_a_restart_runs_a_second_generation_beside_the_first_then_the_first_alone_goes(
        tmp_path):
    command, record = recorder(tmp_path)
    async with supervised(tmp_path) as (sup, seen):
        sup.apply([copy(1, command)])
        await until(lambda: running(sup, 1), what="web.1 v1 g0 running")
        g0 = running(sup, 1)

        # The surge copy of a restart: the same release and spec, generation 1, beside g0.
        sup.apply([copy(1, command), copy(1, command, generation=1)])
        await until(lambda: running(sup, 1, generation=1), what="web.1 v1 g1 running")
        g1 = running(sup, 1, generation=1)
        assert running(sup, 1) == g0 and procs.alive(g0) and procs.alive(g1) and g0 != g1
        assert procs.pgid(g0) == g0 and procs.pgid(g1) == g1
        ports = {(s.release, s.generation): s.port for s in sup.statuses()}
        assert set(ports) == {(1, 0), (1, 1)} and ports[1, 0] != ports[1, 1]
        for pid, generation in ((g0, 0), (g1, 1)):
            env = procs.environ(pid)
            assert env["PORT"] == str(ports[1, generation])
            assert env["FORMATION_RELEASE"] == "1" and env["FORMATION_INSTANCE"] == "web.1"
            with socket.create_connection(("127.0.0.1", ports[1, generation]), timeout=5):
                pass  # each copy serves on its own port
        assert {(s.id, s.release, s.generation) for s in seen
                if s.state == InstanceState.RUNNING} == {("web.1", 1, 0), ("web.1", 1, 1)}
        assert lines(record) == ["started 1", "started 1"]

        # Generation 0 dropped: only it stops, and its last report says which copy it was.
        sup.apply([copy(1, command, generation=1)])
        await until(lambda: not sup.stopping, what="g0's stop")
        assert not procs.alive(g0) and procs.alive(g1) and running(sup, 1, generation=1) == g1
        assert list(sup.runners) == [("app", "web.1", 1, 1)]
        stopped = [s for s in seen if s.state == InstanceState.STOPPED]
        assert [(s.id, s.release, s.generation) for s in stopped] == [("web.1", 1, 0)]
        assert lines(record) == ["started 1", "started 1", "exited 1"]
        assert ports[1, 0] not in sup.ports.used and ports[1, 1] in sup.ports.used
        assert ("app", "web.1") in sup.sink.buffers  # g1 still writes there


async def test_swapping_one_generation_for_the_next_stops_the_old_copy_before_starting_the_new(
        tmp_path):
    command, record = recorder(tmp_path)
    async with supervised(tmp_path) as (sup, seen):
        sup.apply([copy(1, command)])
        await until(lambda: running(sup, 1), what="web.1 v1 g0 running")
        g0 = running(sup, 1)
        sup.apply([copy(1, command, generation=1)])
        await until(lambda: running(sup, 1, generation=1), what="web.1 v1 g1 running")
        assert not procs.alive(g0) and list(sup.runners) == [("app", "web.1", 1, 1)]
        # g0 took 0.3 s to exit after SIGTERM: a g1 started at once would have written first.
        assert lines(record) == ["started 1", "exited 1", "started 1"]
        g1_first = next(i for i, s in enumerate(seen) if s.generation == 1)
        g0_stopped = next(i for i, s in enumerate(seen)
                          if s.generation == 0 and s.state == InstanceState.STOPPED)
        assert g0_stopped < g1_first and seen[g0_stopped].release == 1


async def test_an_at_most_once_id_listed_at_two_releases_runs_only_the_highest(
        tmp_path, caplog):
    command, record = recorder(tmp_path)
    async with supervised(tmp_path) as (sup, seen):
        sup.apply([copy(1, command, "clock.1", at_most_once=True)])
        # No health check: running from its spawn; it has started once it says so.
        await until(lambda: running(sup, 1, "clock.1") and lines(record) == ["started 1"],
                    what="clock.1 v1 started")
        v1 = running(sup, 1, "clock.1")
        with caplog.at_level(logging.WARNING, logger="agent"):
            sup.apply([copy(1, command, "clock.1", at_most_once=True),
                       copy(2, command, "clock.1", at_most_once=True)])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "app/clock.1 v1" in warnings[0], warnings
        await until(lambda: running(sup, 2, "clock.1") and len(lines(record)) == 3,
                    what="clock.1 v2 started")
        assert not procs.alive(v1) and list(sup.runners) == [("app", "clock.1", 2, 0)]
        assert lines(record) == ["started 1", "exited 1", "started 2"]  # never two at once

        # Listed at two releases from the start: one copy only, the highest.
        sup.apply([])
        await until(lambda: not sup.stopping, what="clock.1 stopped")
        sup.apply([copy(4, command, "clock.1", at_most_once=True),
                   copy(3, command, "clock.1", at_most_once=True)])
        await until(lambda: running(sup, 4, "clock.1") and "started 4" in lines(record),
                    what="clock.1 v4 started")
        assert list(sup.runners) == [("app", "clock.1", 4, 0)]
        assert [line for line in lines(record) if line.startswith("started")] == [
            "started 1", "started 2", "started 4"]
        assert 3 not in {s.release for s in seen}


async def test_the_metrics_of_two_copies_of_one_id_are_distinct_series(tmp_path):
    async with supervised(tmp_path) as (sup, _):
        link = SchedulerLink(["127.0.0.1:1"], pb.Hello(), sup)  # never run: not connected
        registry = CollectorRegistry()
        registry.register(AgentCollector(sup, link, sup.sink, capacity=10))
        command, _ = recorder(tmp_path)
        # Three copies: v1, and v2 in two generations (a restart of v2 under way).
        sup.apply([copy(1, command), copy(2, command), copy(2, command, generation=1)])
        await until(lambda: running(sup, 1) and running(sup, 2) and running(sup, 2, generation=1),
                    what="the three copies running")

        text = generate_latest(registry).decode()
        series = [(s.name, tuple(sorted(s.labels.items())))
                  for family in text_string_to_metric_families(text) for s in family.samples]
        assert len(series) == len(set(series)), text
        values = {key: s.value for family in text_string_to_metric_families(text)
                  for s in family.samples
                  for key in [(s.name, tuple(sorted(s.labels.items())))]}
        for release, generation in (("1", "0"), ("2", "0"), ("2", "1")):
            labels = (("app", "app"), ("generation", generation), ("id", "web.1"),
                      ("release", release), ("type", "web"))
            assert values[("formation_agent_instance_restarts_total", labels)] == 0
            assert ("formation_agent_instance_cpu_seconds_total", labels) in values
            assert values[("formation_agent_instance_resident_memory_bytes", labels)] > 0
        running_state = (("app", "app"), ("state", "running"), ("type", "web"))
        assert values[("formation_agent_instances", running_state)] == 3
        assert values[("formation_agent_slots", (("kind", "used"),))] == 3
