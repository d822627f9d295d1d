"""Where runners read the time and arm timers: the event loop's clock, or a test's fake one.

The loop's clock is time.monotonic(), CLOCK_MONOTONIC, which an agent upgrade's exec does not
reset: a timer's due time handed across it (agent/handover.py) is still right after it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where the runner reads the time and arms timers; tests pass a fake one."""
    def now(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopClock:
    """The event loop's monotonic clock and timers."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)
