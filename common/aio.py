"""asyncio helpers: what Python 3.11's own get wrong, and waiting for the first of several.

asyncio.wait_for(fut, timeout) in 3.11 swallows a cancel that comes just as `fut` completes: it
returns the result and the task goes on as if never cancelled (CPython gh-86296, fixed in
3.12). A loop that waits that way for an event - `while True: wait_for(event.wait(), t)` - then
outlives its cancel, and whoever awaits its end after cancelling it waits forever (a
scheduler that never stops on SIGTERM). asyncio.timeout() counts cancels and never loses one.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until event is set, at most timeout seconds (None: no limit); whether it is set.
    A cancel meanwhile is never lost."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task, step: float = 1.0) -> None:
    """Cancel task and return once it is over, cancelling it again every `step` seconds while
    it is not (a cancel swallowed by code of its own, or a library's, is not the end of it)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=step)


async def first(*waits: Awaitable[Any]) -> None:
    """Return once any of them is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
