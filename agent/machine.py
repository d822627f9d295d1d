"""One instance's lifecycle as a sans-I/O state machine: `handle(event, now) -> commands`.

No processes, sockets, timers or clocks here: the runner (agent/runner.py) feeds events with
the time they happened and carries out the commands (agent/events.py). The states and their
transitions are drawn in agent/lifecycle.py; the handlers are listed in _HANDLERS below.

One stop path serves scale-down, fencing and failed health checks alike (_terminate): SIGTERM
to the group, then SIGKILL once the grace period is over, unless the leader exited first.
Whenever the leader exits, whatever it left in its group (its cgroup) is SIGKILLed. A leader
that outlives its SIGKILL by KILL_WAIT (stuck in the kernel) is given up on as if it had
exited, so `stopping` always ends.

A one-shot run (agent/oneshot.py) is this machine where "start again" and "stopped" become
"ended": its subclass overrides _crashed, _stopped and a few handlers.
"""
from __future__ import annotations

import signal

from agent.events import (
    AcquirePort,
    AwaitContact,
    Begin,
    CancelProbe,
    CancelTimer,
    Command,
    Event,
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
from agent.lifecycle import InstanceState, RestartPolicy, describe_exit
from common.appdef import HealthCheck

S = InstanceState
FIRST_PROBE = 0.02     # seconds after the spawn; then doubling up to FAST_PROBES until healthy
FAST_PROBES = 0.25
DEFAULT_FAILURES = 3   # failed checks in a row that restart an instance, if the check says 0
KILL_WAIT = 5.0        # seconds a SIGKILLed leader may take to exit before it is given up on


class InstanceMachine:
    """The decisions of one instance's runner; every field is plain data."""

    def __init__(self, name: str, stop_timeout: float, check: HealthCheck | None = None,
                 at_most_once: bool = False, policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self.check = check
        self.at_most_once = at_most_once
        self.policy = policy or RestartPolicy()
        # What the status says.
        self.state = S.PENDING
        self.reason = ""
        self.pid = 0           # the last leader's pid, until stopped
        self.port = 0          # held from the first start until stopped
        self.restarts = 0
        self.exits = 0
        self.health_failures = 0
        # Where it is in its life.
        self.begun = False
        self.stopping = False       # stopped for good once the leader is gone
        self.waiting_contact = False
        self.waiting_port = False
        self.spawning = False
        self.leader = 0             # pid of the live leader, 0 when none
        self.terminating = False    # SIGTERM sent to the live leader
        self.killed = False         # SIGKILL sent to it by the KILL timer
        self.timers: dict[Timer, float] = {}  # armed timers -> when they are due
        self.spawn_asked = 0.0
        self.spawned_at = 0.0
        self.probing = False        # a probe is under way
        self.probe_delay = FIRST_PROBE
        self.healthy_once = False
        self.failures = 0           # failed checks in a row
        self.unhealthy = ""         # why the health checks ended the current process
        self._out: list[Command] = []

    def handle(self, event: Event, now: float) -> list[Command]:
        """Take one event that happened at `now`; return what to do, in order."""
        self._out = []
        if self.state != S.STOPPED:
            getattr(self, _HANDLERS[type(event)])(event, now)  # a subclass's own, if it has one
        return self._out

    # ---- helpers -------------------------------------------------------------------------

    def _emit(self, *commands: Command) -> None:
        self._out.extend(commands)

    def _to(self, state: InstanceState, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self._emit(Report(state, reason, self.pid, self.port, self.restarts))

    def _arm(self, timer: Timer, delay: float, now: float) -> None:
        self.timers[timer] = now + delay
        self._emit(StartTimer(timer, delay))

    def _disarm(self, timer: Timer) -> None:
        if self.timers.pop(timer, None) is not None:
            self._emit(CancelTimer(timer))

    def _drop_probe(self) -> None:
        self._disarm(Timer.PROBE)
        if self.probing:
            self.probing = False
            self._emit(CancelProbe())

    # ---- starting: (contact) -> port -> spawn ---------------------------------------------

    def _start(self, now: float) -> None:
        if self.at_most_once:  # never (re)start one while out of touch: it may run elsewhere
            self.waiting_contact = True
            self._emit(AwaitContact())
        else:
            self._take_port(now)

    def _take_port(self, now: float) -> None:
        if self.port:
            self._spawn(now)
        else:
            self.waiting_port = True
            self._emit(AcquirePort())

    def _spawn(self, now: float) -> None:
        self.spawning, self.spawn_asked = True, now
        self._to(S.STARTING)
        self._emit(Spawn(self.port))

    def _crashed(self, why: str, now: float, ran: bool = False) -> None:
        """Not running, and not for good: start again after the policy's delay. ran: a
        process ran and ended (the next start counts as a restart)."""
        if ran:
            self.restarts += 1
        delay = self.policy.exited(now)
        self._emit(Note(f"{self.name} {why}; restarting "
                        f"{'now' if delay == 0 else f'in {delay:.1f}s'}"))
        self._to(S.CRASHED, why)
        if delay == 0:
            self._start(now)
        else:
            self._arm(Timer.BACKOFF, delay, now)

    # ---- stopping ---------------------------------------------------------------------------

    def _terminate(self, grace: float, now: float) -> None:
        """The one stop path: SIGTERM the group, SIGKILL it `grace` seconds later (a second
        request may only bring that moment forward)."""
        if not self.terminating:
            self.terminating = True
            self._emit(Signal(self.leader, signal.SIGTERM))
        due = self.timers.get(Timer.KILL)
        if due is None or now + grace < due:
            self._arm(Timer.KILL, grace, now)

    def _stopped(self) -> None:
        for timer in list(self.timers):
            self._disarm(timer)
        if self.port:
            self._emit(ReleasePort(self.port))
        self.pid = 0
        self._to(S.STOPPED)
        self._emit(Finished())

    # ---- handlers, one per event ------------------------------------------------------------

    def _on_begin(self, event: Begin, now: float) -> None:
        if not self.begun and not self.stopping:
            self.begun = True
            self._start(now)

    def _on_in_contact(self, event: InContact, now: float) -> None:
        if self.waiting_contact:
            self.waiting_contact = False
            self._take_port(now)

    def _on_port_acquired(self, event: PortAcquired, now: float) -> None:
        if not self.waiting_port:  # no longer wanted
            self._emit(ReleasePort(event.port))
            return
        self.waiting_port, self.port = False, event.port
        self._spawn(now)

    def _on_port_unavailable(self, event: PortUnavailable, now: float) -> None:
        if self.waiting_port:  # another instance may stop meanwhile: retry with backoff
            self.waiting_port = False
            self._crashed(event.why, now)

    def _on_spawned(self, event: Spawned, now: float) -> None:
        self.spawning, self.leader, self.pid = False, event.pid, event.pid
        self.terminating = self.killed = False
        if self.stopping:  # stopped while it was being spawned: it never should run
            self.killed = True
            self._emit(Signal(event.pid, signal.SIGKILL))
            self._arm(Timer.KILL, KILL_WAIT, now)
            return
        self.policy.started(now)
        self.spawned_at = now
        self._emit(Observe("running", now - self.spawn_asked))
        self.unhealthy, self.healthy_once, self.failures = "", False, 0
        if self.check is None:
            self._to(S.RUNNING)
        else:
            self._to(S.STARTING, "waiting for its first health check")
            self.probe_delay = FIRST_PROBE
            self._arm(Timer.PROBE, FIRST_PROBE, now)

    def _on_spawn_failed(self, event: SpawnFailed, now: float) -> None:
        self.spawning = False
        if self.stopping:
            self._stopped()
        else:
            self._crashed(f"could not start: {event.error}", now)

    def _on_exited(self, event: Exited, now: float) -> None:
        if not self.leader or event.pid not in (0, self.leader):
            return  # none, or one given up on that exits at last
        self._leader_gone(self.unhealthy or describe_exit(event.code), now)

    def _leader_gone(self, why: str, now: float) -> None:
        pid, self.leader, self.terminating, self.killed = self.leader, 0, False, False
        self.exits += 1
        self._drop_probe()
        self._disarm(Timer.KILL)
        # The leader is gone; whatever it left in its group goes too (it may hold the port).
        self._emit(Signal(pid, signal.SIGKILL), ReleaseGroup(pid))
        if self.stopping:
            self._stopped()
        else:
            self._crashed(why, now, ran=True)

    def _on_probe_result(self, event: ProbeResult, now: float) -> None:
        if not self.probing or self.check is None:
            return  # a late answer about a process that is gone or going
        self.probing = False
        check = self.check
        if event.ok:
            self.failures = 0
            if not self.healthy_once:
                self.healthy_once = True
                self._emit(Observe("healthy", now - self.spawned_at))
            if self.state != S.RUNNING:
                self._to(S.RUNNING)
        else:
            self.health_failures += 1
            if not self.healthy_once and now - self.spawned_at < check.grace:
                if event.why != self.reason:  # still starting: failures do not count yet
                    self._to(self.state, event.why)
            else:
                self.failures += 1
                if self.healthy_once and (self.state, self.reason) != (S.UNHEALTHY, event.why):
                    self._to(S.UNHEALTHY, event.why)
                if self.failures >= (check.failures or DEFAULT_FAILURES):
                    self.unhealthy = f"health check failed {self.failures} times: {event.why}"
                    self._emit(Note(f"{self.name} {self.unhealthy}; restarting it", True))
                    self._terminate(self.stop_timeout, now)
                    return
        self.probe_delay = (check.interval if self.healthy_once
                            else min(self.probe_delay * 2, FAST_PROBES, check.interval))
        self._arm(Timer.PROBE, self.probe_delay, now)

    def _on_stop_requested(self, event: StopRequested, now: float) -> None:
        grace = self.stop_timeout if event.timeout is None else event.timeout
        self.stopping = True
        self.waiting_contact = self.waiting_port = False
        self._drop_probe()  # a backoff timer is only armed with no process: _stopped() ends it
        if self.leader:
            if self.state != S.STOPPING:
                self._to(S.STOPPING)
            self._terminate(grace, now)
        elif self.spawning:  # Spawned will kill it, SpawnFailed will end it
            if self.state != S.STOPPING:
                self._to(S.STOPPING)
        else:
            self._stopped()

    def _on_timer_fired(self, event: TimerFired, now: float) -> None:
        if self.timers.pop(event.timer, None) is None:
            return  # cancelled meanwhile
        if event.timer is Timer.BACKOFF:
            self._start(now)
        elif event.timer is Timer.PROBE:
            self.probing = True
            self._emit(Probe())
        elif self.leader and not self.killed:  # Timer.KILL: SIGTERM was not enough
            self.killed = True
            self._emit(Note(f"{self.name} did not stop in time; killing it"),
                        Signal(self.leader, signal.SIGKILL))
            self._arm(Timer.KILL, KILL_WAIT, now)
        elif self.leader:  # Timer.KILL again: not even SIGKILL ended it
            why = (f"pid {self.leader} still there {KILL_WAIT:g}s after SIGKILL; "
                   "given up on")
            self._emit(Note(f"{self.name}: {why}", True))
            self._leader_gone(self.unhealthy or why, now)


# Which method takes which event, by name: a subclass may override one.
_HANDLERS: dict[type, str] = {
    Begin: "_on_begin",
    InContact: "_on_in_contact",
    PortAcquired: "_on_port_acquired",
    PortUnavailable: "_on_port_unavailable",
    Spawned: "_on_spawned",
    SpawnFailed: "_on_spawn_failed",
    Exited: "_on_exited",
    ProbeResult: "_on_probe_result",
    StopRequested: "_on_stop_requested",
    TimerFired: "_on_timer_fired",
}
