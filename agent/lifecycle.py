"""Instance states and the restart policy. Pure: no I/O, the clock is passed in.

    pending -> starting -> running <-> unhealthy
                  ^          |            |
                  |       (exit)   (failed checks)
                  |          v            v
                  `----- crashed <--------'        any state --(unassigned)--> stopping -> stopped
                       (backoff: at once, then 0.5 s doubling to 30 s; reset after 60 s up)
"""
from __future__ import annotations

import signal

from common.states import InstanceState

__all__ = ["InstanceState", "RestartPolicy", "describe_exit"]


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
