"""Instance states and the restart policy. Pure: no I/O, the clock is passed in.

The transitions agent/machine.py makes, each arrow labelled with its event:

               begin               spawned, no check;
    pending ──────────> starting ──or first check passed──> running ──check failed──> unhealthy
       │   (in contact,    │  ^                                │   <──check passed──     │
       │   if at_most_once;│  │ backoff timer                  │                         │
       │   a free port)    │  │ (at once, then 0.5 s           │                         │
       │                   v  │  doubling to 30 s)             v                         v
       └─no free port──> crashed <─────────────────────────────┴─────────────────────────┘
                      spawn failed (from starting); the leader exited (the rest of its group
                      is SIGKILLed); N failed checks in a row: SIGTERM, stop_timeout, SIGKILL.
                      Still no free port after the backoff: crashed again, the next delay.

    any state ──stop requested──> stopping ──leader exited──> stopped
                  SIGTERM the group; SIGKILL it stop_timeout later (a fence: its own grace)
    no process (pending, crashed, waiting for contact or a port) ──stop requested──> stopped

A one-shot run (Assignment.oneshot: a release phase) starts the same way but runs once: no
health check, no restart, no backoff. Its end is final: no process is left, its port is
released, and it says how it ended until a stop, which then only finishes the runner.

                  spawned
    starting ─────────────> running ──exited 0──────────────────────────> succeeded "exited 0"
       │                     │  └──exited non-zero, killed──────────────> failed "exited 3",
       │                     │                                            "killed by SIGKILL"
       │                     └──timeout──> stopping ──leader exited─────> failed "timed out
       │                  (SIGTERM, stop_timeout, SIGKILL)                after 600 s"
       └──spawn failed (or before it: no free port)─────────────────────> failed "spawn
                                                                          failed: ..."
    not ended yet ──stop requested──> stopping ──leader exited──────────> failed "stopped
                  (or at once, with no process)                           before it finished"
"""
from __future__ import annotations

import signal

from common.states import InstanceState

__all__ = ["InstanceState", "RestartPolicy", "describe_end", "describe_exit"]


class RestartPolicy:
    """When to restart a crashed instance: the first restart at once, then 0.5 s doubling up
    to 30 s; an instance that stayed up for 60 s starts over from 'at once'."""

    FIRST_DELAY = 0.5
    MAX_DELAY = 30.0
    RESET_AFTER = 60.0

    def __init__(self) -> None:
        self.failures = 0
        self.started_at: float | None = None

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float) -> float:
        """Record an exit at `now`; return the seconds to wait before the next start."""
        if self.started_at is not None and now - self.started_at >= self.RESET_AFTER:
            self.failures = 0
        self.failures += 1
        if self.failures == 1:
            return 0.0
        return min(self.FIRST_DELAY * 2 ** (self.failures - 2), self.MAX_DELAY)


def describe_exit(returncode: int) -> str:
    """asyncio's returncode (negative for a signal) as a person would say it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def describe_end(returncode: int) -> str:
    """How a one-shot run ended, as its reason says it: "exited 0", "exited 3", "killed by
    SIGTERM"."""
    return f"exited {returncode}" if returncode >= 0 else describe_exit(returncode)
