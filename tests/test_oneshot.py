"""One-shot runs (agent/oneshot.py): the machine on its own, as tests/test_machine.py does it
(events in with the time they happened, commands out, no clock but the numbers passed in),
then a runner with real processes. Each machine test walks an arrow of the one-shot diagram
in agent/lifecycle.py."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from signal import SIGKILL, SIGTERM

from agent.events import (
    AcquirePort,
    AwaitContact,
    Begin,
    CancelTimer,
    Exited,
    Finished,
    InContact,
    Note,
    Observe,
    PortAcquired,
    PortUnavailable,
    ReleaseGroup,
    ReleasePort,
    Report,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    StartTimer,
    StopRequested,
    Timer,
    TimerFired,
)
from agent.launcher import OsLauncher
from agent.logs import LogSink
from agent.machine import KILL_WAIT
from agent.oneshot import OneShotMachine
from agent.ports import PortPool
from agent.runner import InstanceRunner
from common.states import InstanceState as S
from ctl.localcluster import free_port
from proto import formation_pb2 as pb
from tests.cluster import procs

PORT = 5000


def new(timeout: float = 0.0, stop_timeout: float = 10.0,
        at_most_once: bool = False) -> OneShotMachine:
    return OneShotMachine("release.1", stop_timeout, timeout, at_most_once)


def reports(commands) -> list[tuple[S, str]]:
    return [(c.state, c.reason) for c in commands if isinstance(c, Report)]


def without(commands, *kinds) -> list:
    """The commands but Reports, Notes and Observes (checked apart), or those given."""
    kinds = kinds or (Report, Note, Observe)
    return [c for c in commands if not isinstance(c, kinds)]


def running(m: OneShotMachine, now: float = 0.0, pid: int = 100) -> OneShotMachine:
    """pending -> starting -> running, with port PORT."""
    assert m.handle(Begin(), now) == [AcquirePort()]
    out = m.handle(PortAcquired(PORT), now)
    assert without(out) == [Spawn(PORT)] and reports(out) == [(S.STARTING, "")]
    out = m.handle(Spawned(pid), now)
    assert reports(out) == [(S.RUNNING, "")]
    return m


def assert_over(m: OneShotMachine, state: S, reason: str) -> None:
    """Ended: the final state, no process, no port, no timer; nothing moves it any more, and
    a stop only finishes it, once."""
    assert (m.state, m.reason, m.pid, m.port, m.timers, m.restarts) == (state, reason, 0, 0,
                                                                       {}, 0)
    for event in (Begin(), InContact(), Spawned(300), SpawnFailed("no"), Exited(0),
                  Exited(1, pid=100), PortUnavailable("none"), TimerFired(Timer.BACKOFF),
                  TimerFired(Timer.DEADLINE), TimerFired(Timer.KILL)):
        assert m.handle(event, 1000) == [], event
    assert m.handle(PortAcquired(PORT + 1), 1000) == [ReleasePort(PORT + 1)]  # not wanted
    assert m.handle(StopRequested(), 1000) == [Report(S.STOPPED, reason, 0, 0, 0), Finished()]
    assert m.handle(StopRequested(), 1001) == []
    assert (m.state, m.reason) == (state, reason)


def test_exit_0_is_succeeded_with_its_group_killed_and_its_port_released():
    m = running(new(), pid=100)
    out = m.handle(Exited(0), 5.0)
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), ReleasePort(PORT)]
    assert [c for c in out if isinstance(c, Report)] == [Report(S.SUCCEEDED, "exited 0", 0, 0,
                                                               0)]
    assert m.exits == 1
    assert_over(m, S.SUCCEEDED, "exited 0")


def test_a_non_zero_exit_is_failed_with_its_code_and_never_restarted():
    m = running(new(), pid=100)
    out = m.handle(Exited(3), 5.0)
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), ReleasePort(PORT)]
    assert reports(out) == [(S.FAILED, "exited 3")]
    notes = [c for c in out if isinstance(c, Note)]
    assert notes and notes[0].warning and "exited 3" in notes[0].text
    assert_over(m, S.FAILED, "exited 3")


def test_killed_by_a_signal_is_failed():
    m = running(new(), pid=100)
    assert reports(m.handle(Exited(-9), 1)) == [(S.FAILED, "killed by SIGKILL")]
    assert_over(m, S.FAILED, "killed by SIGKILL")


def test_a_spawn_failure_is_failed_with_no_retry_and_no_backoff():
    m = new()
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    out = m.handle(SpawnFailed("[Errno 2] No such file or directory: 'migrate'"), 0)
    assert without(out) == [ReleasePort(PORT)]
    assert reports(out) == [(S.FAILED, "spawn failed: [Errno 2] No such file or directory: "
                                       "'migrate'")]
    assert_over(m, S.FAILED, "spawn failed: [Errno 2] No such file or directory: 'migrate'")


def test_no_free_port_is_failed_too():
    m = new()
    m.handle(Begin(), 0)
    out = m.handle(PortUnavailable("no free port in 5000-5000"), 0)
    assert without(out) == [] and reports(out) == [(S.FAILED, "no free port in 5000-5000")]
    assert_over(m, S.FAILED, "no free port in 5000-5000")


def test_the_timeout_takes_the_stop_path_sigterm_then_sigkill_stop_timeout_later():
    m = new(timeout=600, stop_timeout=10)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    out = m.handle(Spawned(100), 2)
    assert StartTimer(Timer.DEADLINE, 600) in out and m.timers[Timer.DEADLINE] == 602
    out = m.handle(TimerFired(Timer.DEADLINE), 602)
    assert reports(out) == [(S.STOPPING, "timed out after 600 s")]
    assert without(out) == [Signal(100, SIGTERM), StartTimer(Timer.KILL, 10)]
    assert m.timers[Timer.KILL] == 612
    out = m.handle(TimerFired(Timer.KILL), 612)
    assert without(out) == [Signal(100, SIGKILL), StartTimer(Timer.KILL, KILL_WAIT)]
    out = m.handle(Exited(-9), 612)
    assert without(out) == [CancelTimer(Timer.KILL), Signal(100, SIGKILL), ReleaseGroup(100),
                            ReleasePort(PORT)]
    assert reports(out) == [(S.FAILED, "timed out after 600 s")]
    assert_over(m, S.FAILED, "timed out after 600 s")


def test_a_run_that_exits_0_on_its_timeouts_sigterm_still_failed():
    m = running(new(timeout=0.3), pid=100)
    assert Signal(100, SIGTERM) in m.handle(TimerFired(Timer.DEADLINE), 0.3)
    assert reports(m.handle(Exited(0), 0.4)) == [(S.FAILED, "timed out after 0.3 s")]


def test_a_run_that_ends_in_time_cancels_its_timeout():
    m = running(new(timeout=600), pid=100)
    out = m.handle(Exited(0), 5)
    assert CancelTimer(Timer.DEADLINE) in out and m.state == S.SUCCEEDED
    assert m.handle(TimerFired(Timer.DEADLINE), 600) == []


def test_a_leader_that_outlives_its_sigkill_after_a_timeout_is_given_up_on_and_failed():
    m = running(new(timeout=1, stop_timeout=2), pid=100)
    m.handle(TimerFired(Timer.DEADLINE), 1)
    m.handle(TimerFired(Timer.KILL), 3)
    out = m.handle(TimerFired(Timer.KILL), 3 + KILL_WAIT)
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), ReleasePort(PORT)]
    assert reports(out) == [(S.FAILED, "timed out after 1 s")]
    assert m.handle(Exited(-9, pid=100), 20) == []  # at last: nothing changes


def test_a_stop_while_running_takes_the_stop_path_and_fails_it_then_finishes():
    m = running(new(timeout=600, stop_timeout=7.5), pid=100)
    out = m.handle(StopRequested(), 3)
    assert reports(out) == [(S.STOPPING, "")]
    assert without(out) == [CancelTimer(Timer.DEADLINE), Signal(100, SIGTERM),
                            StartTimer(Timer.KILL, 7.5)]
    out = m.handle(Exited(0), 4)  # even a clean exit on SIGTERM: it did not finish its work
    assert without(out) == [CancelTimer(Timer.KILL), Signal(100, SIGKILL), ReleaseGroup(100),
                            ReleasePort(PORT), Finished()]
    assert reports(out) == [(S.FAILED, "stopped before it finished"),
                            (S.STOPPED, "stopped before it finished")]
    assert (m.state, m.pid, m.port, m.restarts) == (S.FAILED, 0, 0, 0)
    assert m.handle(StopRequested(), 5) == []  # finished once


def test_a_stop_after_the_timeout_keeps_the_timeout_as_the_reason():
    m = running(new(timeout=1, stop_timeout=10), pid=100)
    m.handle(TimerFired(Timer.DEADLINE), 1)
    out = m.handle(StopRequested(timeout=2), 2)  # a fence: only brings the SIGKILL forward
    assert without(out) == [StartTimer(Timer.KILL, 2)] and reports(out) == []
    out = m.handle(Exited(-15), 3)
    assert reports(out) == [(S.FAILED, "timed out after 1 s"), (S.STOPPED, "timed out after 1 s")]
    assert Finished() in out


def test_a_stop_before_it_ran_fails_it_at_once():
    m = new()
    out = m.handle(StopRequested(), 0)  # not even begun
    assert without(out) == [Finished()]
    assert reports(out) == [(S.FAILED, "stopped before it finished"),
                            (S.STOPPED, "stopped before it finished")]
    assert m.handle(Begin(), 1) == []
    m = new()
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    assert reports(m.handle(StopRequested(), 0)) == [(S.STOPPING, "")]  # spawn under way
    assert m.handle(Spawned(100), 0.1) == [Signal(100, SIGKILL),
                                           StartTimer(Timer.KILL, KILL_WAIT)]
    out = m.handle(Exited(-9), 0.1)
    assert reports(out) == [(S.FAILED, "stopped before it finished"),
                            (S.STOPPED, "stopped before it finished")] and Finished() in out


def test_a_stop_on_an_ended_run_only_says_it_left():
    m = running(new(), pid=100)
    m.handle(Exited(0), 1)
    # it stays succeeded; the report says it left
    assert m.handle(StopRequested(), 2) == [Report(S.STOPPED, "exited 0", 0, 0, 0), Finished()]
    assert (m.state, m.reason) == (S.SUCCEEDED, "exited 0")


def test_never_a_restart_whatever_ends_it():
    ends: list[Exited | SpawnFailed] = [Exited(0), Exited(1), Exited(-15), SpawnFailed("no")]
    for end in ends:
        m = new()
        m.handle(Begin(), 0)
        m.handle(PortAcquired(PORT), 0)
        out = [] if isinstance(end, SpawnFailed) else m.handle(Spawned(100), 0)
        out += m.handle(end, 1)
        for now in (2, 30, 3600):  # and nothing later either
            out += m.handle(TimerFired(Timer.BACKOFF), now)
        kinds = {type(c) for c in out}
        assert Spawn not in kinds and AcquirePort not in kinds and AwaitContact not in kinds
        assert not [c for c in out if isinstance(c, StartTimer) and c.timer is Timer.BACKOFF]
        assert m.restarts == 0 and m.state in (S.SUCCEEDED, S.FAILED)


def test_at_most_once_still_waits_for_contact_before_its_one_start():
    m = new(at_most_once=True)
    assert m.handle(Begin(), 0) == [AwaitContact()]
    assert m.handle(InContact(), 1) == [AcquirePort()]
    m.handle(PortAcquired(PORT), 1)
    m.handle(Spawned(100), 1)
    out = m.handle(Exited(2), 2)
    assert reports(out) == [(S.FAILED, "exited 2")] and AwaitContact() not in out


def test_a_timeout_that_is_no_number_is_no_limit():
    for timeout in (0.0, -1.0, float("nan"), float("inf")):
        m = running(new(timeout=timeout), pid=100)
        assert m.timers == {}


# ---- real processes ---------------------------------------------------------------------------

def oneshot(iid: str, command: str, timeout: float = 0.0) -> pb.Assignment:
    return pb.Assignment(app="app", id=iid, type="release", release=1, command=command,
                         stop_timeout=0.5, oneshot=True, timeout=timeout,
                         health=pb.HealthCheck(type="tcp"))  # ignored: a run has no check


async def until(what: str, predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"no {what} within {seconds}s"
        await asyncio.sleep(0.01)
    return value


async def test_real_runs_end_succeeded_failed_or_timed_out_and_leave_no_process(tmp_path):
    launcher = OsLauncher()  # no guardian: the finally below kills whatever is left
    port = free_port()
    ports = PortPool(range(port, port + 3))
    sink = LogSink(io.BytesIO())
    seen: list[pb.InstanceStatus] = []
    runners = [InstanceRunner(spec, ports, launcher, sink, seen.append, str(tmp_path),
                              dict(os.environ))
               for spec in (oneshot("ok.1", "sh -c 'echo hi; exit 0'"),
                            oneshot("bad.1", "sh -c 'exit 3'"),
                            oneshot("slow.1", "sleep 30", timeout=0.3))]
    try:
        for r in runners:
            r.start()
        await until("three ends", lambda: all(r.state in (S.SUCCEEDED, S.FAILED)
                                              for r in runners))
        ends = {r.spec.id: (S(r.status().state), r.status().reason, r.status().pid,
                            r.status().port) for r in runners}
        assert ends == {"ok.1": (S.SUCCEEDED, "exited 0", 0, 0),
                        "bad.1": (S.FAILED, "exited 3", 0, 0),
                        "slow.1": (S.FAILED, "timed out after 0.3 s", 0, 0)}
        assert not [s for s in seen if s.state == S.CRASHED or s.restarts]
        slow = [(S(s.state), s.reason) for s in seen if s.id == "slow.1"]
        assert slow[-2:] == [(S.STOPPING, "timed out after 0.3 s"),
                             (S.FAILED, "timed out after 0.3 s")]
        pids = {s.pid for s in seen if s.pid}
        assert len(pids) == 3  # one spawn each
        await until("every group to be gone", lambda: not any(
            procs.alive(pid) or procs.group_members(pid) for pid in pids))
        assert ports.used == set()
        await until("its output", lambda: [e for e in sink.history(lambda e: True, 10)
                                           if e.instance == "ok.1" and e.text == "hi"])
        for r in runners:  # ended runs stay so until told to stop, which only finishes them
            await asyncio.wait_for(r.stop(), 5)
            assert r.state in (S.SUCCEEDED, S.FAILED)
    finally:
        for r in runners:
            if r.child is not None:  # only if the test failed before an end
                launcher.kill_group(r.child.pid, signal.SIGKILL)
                r.child.close()


async def test_a_run_that_ignores_sigterm_is_sigkilled_stop_timeout_after_its_timeout(
        tmp_path):
    launcher = OsLauncher()
    port = free_port()
    spec = oneshot("stubborn.1", "trap '' TERM; sleep 30", timeout=0.3)
    runner = InstanceRunner(spec, PortPool(range(port, port + 1)), launcher,
                            LogSink(io.BytesIO()), lambda s: None, str(tmp_path),
                            dict(os.environ))
    try:
        started = time.monotonic()
        runner.start()
        pid = await until("the spawn", lambda: runner.pid)
        await until("the end", lambda: runner.state == S.FAILED)
        assert time.monotonic() - started >= 0.3 + 0.5 - 0.05  # SIGTERM was not enough
        assert runner.machine.reason == "timed out after 0.3 s"
        await until("its group to be gone",
                    lambda: not (procs.alive(pid) or procs.group_members(pid)))
        await asyncio.wait_for(runner.stop(), 5)
    finally:
        if runner.child is not None:
            launcher.kill_group(runner.child.pid, signal.SIGKILL)
            runner.child.close()
