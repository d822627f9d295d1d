"""A one-shot run's state machine: a Procfile's `release: CMD`, run once per release before a
rollout (Assignment.oneshot). Sans-I/O like the InstanceMachine it extends (agent/machine.py),
with the same start (contact, port, spawn), the same stop path and the same group clean-up.

What differs: it never starts again and has no health check. Whatever would make an instance
crashed ends the run for good instead: succeeded if its leader exited 0, failed otherwise,
the reason saying how. A timeout (Timer.DEADLINE, from the spawn) or a stop before the end
takes the one stop path and fails it, whatever the leader does then. Once ended it holds no
process, timer or port and does nothing but finish when told to stop, so its runner reports
the end until the assignment leaves the agent's list. The diagram is in agent/lifecycle.py.
"""
from __future__ import annotations

import math

from agent.events import (
    Command,
    Event,
    Exited,
    Finished,
    Note,
    PortAcquired,
    ReleasePort,
    Report,
    Spawned,
    SpawnFailed,
    StopRequested,
    Timer,
    TimerFired,
)
from agent.lifecycle import InstanceState, describe_end
from agent.machine import InstanceMachine

S = InstanceState
STOPPED_EARLY = "stopped before it finished"  # the reason of a run a stop ended


class OneShotMachine(InstanceMachine):
    """The decisions of a one-shot run's runner. timeout: seconds from the spawn to the stop
    path (0, or anything but a positive finite number: no limit)."""

    def __init__(self, name: str, stop_timeout: float, timeout: float = 0.0,
                 at_most_once: bool = False) -> None:
        super().__init__(name, stop_timeout, None, at_most_once)
        self.timeout = timeout if 0 < timeout < math.inf else 0.0
        self.exit_code: int | None = None  # how its leader ended, if it exited
        self.cut_short = ""  # why it is being ended before its end (a timeout, a stop)
        self.ended = False   # its state is final

    def handle(self, event: Event, now: float) -> list[Command]:
        if not self.ended:
            return super().handle(event, now)
        if isinstance(event, PortAcquired):  # asked for before the end: not wanted now
            return [ReleasePort(event.port)]
        if isinstance(event, StopRequested) and not self.stopping:
            self.stopping = True  # nothing left to stop: the runner may go
            return self._leave()
        return []

    # ---- where an instance would start again, or be stopped: the run is over ---------------

    def _crashed(self, why: str, now: float, ran: bool = False) -> None:
        self._end(why)

    def _stopped(self) -> None:
        self._end(self.cut_short)

    def _end(self, why: str) -> None:
        """Succeeded if its leader exited 0 by itself, else failed: why it was cut short, if
        it was, is the reason rather than how its leader then ended."""
        for timer in list(self.timers):
            self._disarm(timer)
        if self.port:
            self._emit(ReleasePort(self.port))
        self.ended, self.pid, self.port = True, 0, 0
        ok = self.exit_code == 0 and not self.cut_short
        why = self.cut_short or why
        self._emit(Note(f"{self.name} ran once and {'succeeded' if ok else 'failed'}: {why}",
                        not ok))
        self._to(S.SUCCEEDED if ok else S.FAILED, why)
        if self.stopping:
            self._emit(*self._leave())

    def _leave(self) -> list[Command]:
        """The run leaves the agent (its outcome said, it stays its state): said as by any
        instance that stopped, for the scheduler starts the app's next release phase only
        once no agent reports one."""
        return [Report(S.STOPPED, self.reason, 0, 0, self.restarts), Finished()]

    # ---- handlers that differ from an instance's ---------------------------------------------

    def _on_spawned(self, event: Spawned, now: float) -> None:
        super()._on_spawned(event, now)
        if self.timeout and not self.stopping:
            self._arm(Timer.DEADLINE, self.timeout, now)

    def _on_spawn_failed(self, event: SpawnFailed, now: float) -> None:
        self.spawning = False
        self._end(f"spawn failed: {event.error}")

    def _on_exited(self, event: Exited, now: float) -> None:
        if self.leader and event.pid in (0, self.leader):  # else none, or one given up on
            self.exit_code = event.code
            self._leader_gone(describe_end(event.code), now)

    def _on_stop_requested(self, event: StopRequested, now: float) -> None:
        self.cut_short = self.cut_short or STOPPED_EARLY  # a timeout that came first stays
        self._disarm(Timer.DEADLINE)
        super()._on_stop_requested(event, now)

    def _on_timer_fired(self, event: TimerFired, now: float) -> None:
        if event.timer is not Timer.DEADLINE:
            super()._on_timer_fired(event, now)
        elif self.timers.pop(Timer.DEADLINE, None) is not None:  # not cancelled meanwhile
            self.cut_short = f"timed out after {self.timeout:g} s"
            self._emit(Note(f"{self.name} {self.cut_short}; stopping it", True))
            self._to(S.STOPPING, self.cut_short)
            self._terminate(self.stop_timeout, now)
