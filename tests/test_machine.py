"""The instance state machine (agent/machine.py) on its own: events in with the time they
happened, commands out. No event loop, no processes, no clock but the numbers passed in.
Each test walks arrows of the diagram in agent/lifecycle.py."""
from __future__ import annotations

from signal import SIGKILL, SIGTERM

from agent.events import (
    AcquirePort,
    AwaitContact,
    Begin,
    CancelProbe,
    CancelTimer,
    Exited,
    Finished,
    InContact,
    Note,
    Observe,
    PortAcquired,
    PortUnavailable,
    Probe,
    ProbeResult,
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
from agent.machine import KILL_WAIT, InstanceMachine
from common.appdef import HealthCheck
from common.states import InstanceState as S

PORT = 5000
CHECK = HealthCheck(type="tcp", interval=5, timeout=1, grace=2, failures=3)


def new(check: HealthCheck | None = None, at_most_once: bool = False,
        stop_timeout: float = 10.0) -> InstanceMachine:
    return InstanceMachine("web.1", stop_timeout, check, at_most_once)


def reports(commands) -> list[tuple[S, str]]:
    return [(c.state, c.reason) for c in commands if isinstance(c, Report)]


def without(commands, *kinds) -> list:
    """The commands but Reports, Notes and Observes (checked apart), or those given."""
    kinds = kinds or (Report, Note, Observe)
    return [c for c in commands if not isinstance(c, kinds)]


def running(m: InstanceMachine, now: float = 0.0, pid: int = 100) -> InstanceMachine:
    """pending -> starting -> running (no check), with port PORT."""
    assert m.handle(Begin(), now) == [AcquirePort()]
    out = m.handle(PortAcquired(PORT), now)
    assert without(out) == [Spawn(PORT)] and reports(out) == [(S.STARTING, "")]
    out = m.handle(Spawned(pid), now)
    assert reports(out) == [(S.RUNNING, "")] and Observe("running", 0.0) in out
    return m


def test_pending_starting_running_and_the_status_it_reports():
    m = new()
    assert m.state == S.PENDING
    running(m, pid=100)
    assert (m.state, m.pid, m.port, m.restarts) == (S.RUNNING, 100, PORT, 0)
    assert m.handle(StopRequested(), 1)[0] == Report(S.STOPPING, "", 100, PORT, 0)


def test_leader_exit_kills_the_rest_of_its_group_and_restarts_at_once():
    # Bug 1: a shell leader dies while its child lives on in the group (and holds the port).
    m = running(new(), pid=100)
    out = m.handle(Exited(-9), 5.0)
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), Spawn(PORT)]
    assert reports(out) == [(S.CRASHED, "killed by SIGKILL"), (S.STARTING, "")]
    assert m.restarts == 1 and m.exits == 1
    m.handle(Spawned(101), 5.0)
    assert (m.state, m.pid, m.restarts) == (S.RUNNING, 101, 1)


def test_restart_delays_double_from_half_a_second_to_thirty_and_reset_after_a_minute_up():
    m = running(new())
    now, delays = 0.0, []
    for pid in range(101, 111):
        now += 1  # up one second each time
        out = m.handle(Exited(1), now)
        timers = [c.delay for c in out if isinstance(c, StartTimer)]
        if timers:
            assert m.state == S.CRASHED and Spawn(PORT) not in out
            delays.append(timers[0])
            now += timers[0]
            assert without(m.handle(TimerFired(Timer.BACKOFF), now)) == [Spawn(PORT)]
        else:
            assert Spawn(PORT) in out
            delays.append(0)
        m.handle(Spawned(pid), now)
    assert delays == [0, 0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    now += 60  # up a minute: the next crash restarts at once again
    assert Spawn(PORT) in m.handle(Exited(1), now)
    assert m.restarts == 11


def test_a_backoff_timer_that_was_cancelled_does_nothing():
    m = running(new())
    m.handle(Exited(1), 1)
    m.handle(Spawned(101), 1)
    assert StartTimer(Timer.BACKOFF, 0.5) in m.handle(Exited(1), 2)
    assert CancelTimer(Timer.BACKOFF) in m.handle(StopRequested(), 2.1)
    assert m.handle(TimerFired(Timer.BACKOFF), 2.5) == []


def test_no_free_port_is_crashed_with_the_reason_and_retried_with_backoff():
    # Bug 2: no free port in the range; it must be retried, and say why.
    m = new()
    assert m.handle(Begin(), 0) == [AcquirePort()]
    out = m.handle(PortUnavailable("no free port in 5000-5000"), 0)
    assert reports(out) == [(S.CRASHED, "no free port in 5000-5000")]
    assert without(out) == [AcquirePort()]  # the first retry at once
    out = m.handle(PortUnavailable("no free port in 5000-5000"), 0)
    assert without(out) == [StartTimer(Timer.BACKOFF, 0.5)]
    assert m.handle(TimerFired(Timer.BACKOFF), 0.5) == [AcquirePort()]
    out = m.handle(PortUnavailable("no free port in 5000-5000"), 0.5)
    assert without(out) == [StartTimer(Timer.BACKOFF, 1)]
    assert m.handle(TimerFired(Timer.BACKOFF), 1.5) == [AcquirePort()]
    out = m.handle(PortAcquired(PORT), 1.5)  # another instance stopped
    assert without(out) == [Spawn(PORT)] and m.state == S.STARTING
    assert m.restarts == 0  # nothing ran, nothing was restarted


def test_spawn_failure_is_crashed_and_retried_with_backoff():
    m = new()
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    out = m.handle(SpawnFailed("[Errno 11] Resource temporarily unavailable"), 0)
    assert reports(out)[0] == (S.CRASHED, "could not start: [Errno 11] Resource temporarily "
                                          "unavailable")
    assert without(out) == [Spawn(PORT)]
    out = m.handle(SpawnFailed("again"), 0)
    assert without(out) == [StartTimer(Timer.BACKOFF, 0.5)]


def test_stop_sigterms_then_sigkills_exactly_stop_timeout_later_then_stopped():
    m = running(new(stop_timeout=7.5), pid=100)
    out = m.handle(StopRequested(), 3.0)
    assert reports(out) == [(S.STOPPING, "")]
    assert without(out) == [Signal(100, SIGTERM), StartTimer(Timer.KILL, 7.5)]
    assert m.timers[Timer.KILL] == 10.5
    out = m.handle(TimerFired(Timer.KILL), 10.5)
    assert without(out) == [Signal(100, SIGKILL), StartTimer(Timer.KILL, KILL_WAIT)]
    out = m.handle(Exited(-9), 10.5)
    assert without(out) == [CancelTimer(Timer.KILL), Signal(100, SIGKILL), ReleaseGroup(100),
                            ReleasePort(PORT), Finished()]
    assert reports(out) == [(S.STOPPED, "")] and m.pid == 0 and m.restarts == 0


def test_stop_of_a_process_that_obeys_sigterm_cancels_the_kill():
    m = running(new(), pid=100)
    m.handle(StopRequested(), 0)
    out = m.handle(Exited(-15), 0.2)
    assert without(out) == [CancelTimer(Timer.KILL), Signal(100, SIGKILL), ReleaseGroup(100),
                            ReleasePort(PORT), Finished()]
    assert m.state == S.STOPPED
    assert m.handle(TimerFired(Timer.KILL), 10) == []  # gone: nothing more happens
    assert m.handle(Begin(), 11) == [] and m.handle(StopRequested(), 11) == []


def test_a_fence_uses_its_own_grace_and_a_second_stop_only_brings_the_kill_forward():
    m = running(new(stop_timeout=10), pid=100)
    assert without(m.handle(StopRequested(timeout=2), 0)) == [Signal(100, SIGTERM),
                                                              StartTimer(Timer.KILL, 2)]
    assert m.handle(StopRequested(timeout=5), 1) == []      # later than planned: no change
    assert m.handle(StopRequested(timeout=0.5), 1) == [StartTimer(Timer.KILL, 0.5)]


def test_stop_without_a_process_goes_straight_to_stopped():
    m = new()
    out = m.handle(StopRequested(), 0)  # pending, not begun
    assert without(out) == [Finished()] and reports(out) == [(S.STOPPED, "")]
    m = running(new())
    m.handle(Exited(1), 1)
    m.handle(Spawned(101), 1)
    m.handle(Exited(1), 2)  # crashed, backing off
    out = m.handle(StopRequested(), 2)
    assert without(out) == [CancelTimer(Timer.BACKOFF), ReleasePort(PORT), Finished()]


def test_stop_while_spawning_kills_it_as_soon_as_it_has_spawned():
    m = new()
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    assert reports(m.handle(StopRequested(), 0)) == [(S.STOPPING, "")]
    assert m.handle(Spawned(100), 0.1) == [Signal(100, SIGKILL),
                                           StartTimer(Timer.KILL, KILL_WAIT)]
    assert Finished() in m.handle(Exited(-9), 0.1) and m.state == S.STOPPED
    m = new()
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    m.handle(StopRequested(), 0)
    assert without(m.handle(SpawnFailed("no"), 0)) == [ReleasePort(PORT), Finished()]


def test_health_checks_starting_to_running_to_unhealthy_and_back():
    m = new(check=CHECK)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    out = m.handle(Spawned(100), 0)
    assert reports(out) == [(S.STARTING, "waiting for its first health check")]
    assert StartTimer(Timer.PROBE, 0.02) in out
    assert m.handle(TimerFired(Timer.PROBE), 0.02) == [Probe()]
    # Failures within the grace period (2 s) only say why; probes speed up to 0.25 s apart.
    delays = []
    now = 0.02
    for _ in range(5):
        out = m.handle(ProbeResult(False, "tcp check: refused"), now)
        assert m.state == S.STARTING
        assert isinstance(out[-1], StartTimer)
        delays.append(out[-1].delay)
        now += out[-1].delay
        m.handle(TimerFired(Timer.PROBE), now)
    assert delays == [0.04, 0.08, 0.16, 0.25, 0.25] and m.reason == "tcp check: refused"
    out = m.handle(ProbeResult(True), now)
    assert reports(out) == [(S.RUNNING, "")] and Observe("healthy", now) in out
    assert out[-1] == StartTimer(Timer.PROBE, 5)  # then every interval
    m.handle(TimerFired(Timer.PROBE), now + 5)
    out = m.handle(ProbeResult(False, "tcp check: refused"), now + 5)
    assert reports(out) == [(S.UNHEALTHY, "tcp check: refused")]
    m.handle(TimerFired(Timer.PROBE), now + 10)
    assert reports(m.handle(ProbeResult(True), now + 10)) == [(S.RUNNING, "")]
    assert m.health_failures == 6 and m.restarts == 0


def test_failed_checks_in_a_row_restart_through_the_one_stop_path():
    m = new(check=CHECK, stop_timeout=4)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    m.handle(Spawned(100), 0)
    m.handle(TimerFired(Timer.PROBE), 0.02)
    m.handle(ProbeResult(True), 0.02)
    now = 0.02
    for _ in (1, 2):
        now += 5
        m.handle(TimerFired(Timer.PROBE), now)
        assert Signal(100, SIGTERM) not in m.handle(ProbeResult(False, "down"), now)
    now += 5
    m.handle(TimerFired(Timer.PROBE), now)
    out = m.handle(ProbeResult(False, "down"), now)
    assert without(out) == [Signal(100, SIGTERM), StartTimer(Timer.KILL, 4)]
    assert m.state == S.UNHEALTHY  # not stopping: it comes back
    assert without(m.handle(TimerFired(Timer.KILL), now + 4)) == [
        Signal(100, SIGKILL), StartTimer(Timer.KILL, KILL_WAIT)]
    out = m.handle(Exited(-9), now + 4)
    assert reports(out)[0] == (S.CRASHED, "health check failed 3 times: down")
    assert Spawn(PORT) in out and m.restarts == 1


def test_a_stop_during_a_health_restart_sends_no_second_sigterm():
    m = new(check=HealthCheck(type="tcp", interval=1, grace=0, failures=1), stop_timeout=10)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    m.handle(Spawned(100), 0)
    m.handle(TimerFired(Timer.PROBE), 0.02)
    assert Signal(100, SIGTERM) in m.handle(ProbeResult(False, "down"), 0.02)
    out = m.handle(StopRequested(timeout=1), 1)
    assert without(out) == [StartTimer(Timer.KILL, 1)] and m.state == S.STOPPING
    assert Finished() in m.handle(Exited(-15), 1.5)


def test_late_probe_results_are_ignored():
    m = new(check=CHECK)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    m.handle(Spawned(100), 0)
    m.handle(TimerFired(Timer.PROBE), 0.02)
    out = m.handle(Exited(1), 0.03)  # the probe under way no longer matters
    assert CancelProbe() in out
    assert m.handle(ProbeResult(True), 0.04) == []
    assert m.state == S.STARTING and m.pid == 100  # restarted, spawn under way


def test_at_most_once_waits_for_contact_before_every_start():
    m = new(at_most_once=True)
    assert m.handle(Begin(), 0) == [AwaitContact()]
    assert m.handle(InContact(), 1) == [AcquirePort()]
    m.handle(PortAcquired(PORT), 1)
    m.handle(Spawned(100), 1)
    out = m.handle(Exited(1), 2)
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), AwaitContact()]
    assert m.state == S.CRASHED
    assert without(m.handle(InContact(), 9)) == [Spawn(PORT)]
    m = new(at_most_once=True)
    m.handle(Begin(), 0)
    assert without(m.handle(StopRequested(), 1)) == [Finished()]
    assert m.handle(InContact(), 2) == []  # stopped: it never starts


def test_a_leader_that_outlives_its_sigkill_is_given_up_on_so_stopping_always_ends():
    m = running(new(stop_timeout=2), pid=100)
    m.handle(StopRequested(), 0)
    assert without(m.handle(TimerFired(Timer.KILL), 2)) == [Signal(100, SIGKILL),
                                                            StartTimer(Timer.KILL, KILL_WAIT)]
    out = m.handle(TimerFired(Timer.KILL), 2 + KILL_WAIT)  # stuck in the kernel, say
    assert without(out) == [Signal(100, SIGKILL), ReleaseGroup(100), ReleasePort(PORT),
                            Finished()]
    assert m.state == S.STOPPED
    notes = [c for c in out if isinstance(c, Note)]
    assert notes and notes[0].warning and "given up on" in notes[0].text


def test_a_leader_given_up_on_that_exits_later_does_not_end_its_successor():
    m = new(check=CHECK, stop_timeout=1)
    m.handle(Begin(), 0)
    m.handle(PortAcquired(PORT), 0)
    m.handle(Spawned(100), 0)
    m.handle(TimerFired(Timer.PROBE), 0)
    m.handle(ProbeResult(True), 0)
    for now in (5, 10, 15):  # three failed checks: SIGTERM; it ignores that, then SIGKILL
        m.handle(TimerFired(Timer.PROBE), now)
        m.handle(ProbeResult(False, "down"), now)
    m.handle(TimerFired(Timer.KILL), 16)
    out = m.handle(TimerFired(Timer.KILL), 16 + KILL_WAIT)
    assert Spawn(PORT) in out and m.state == S.STARTING
    m.handle(Spawned(200), 22)
    assert m.handle(Exited(-9, pid=100), 23) == []  # the old one, at last
    assert m.leader == 200
    assert ReleaseGroup(200) in m.handle(Exited(1, pid=200), 24)
