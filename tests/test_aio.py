"""common/aio.py: waits whose cancel is never lost (Python 3.11's wait_for loses one that comes
as the awaited thing completes), and a cancel that insists."""
from __future__ import annotations

import asyncio
import contextlib
import sys

from common.aio import cancel_and_wait, wait_event


async def waiting_loop(event: asyncio.Event, wait) -> None:
    while True:
        await wait(event)
        event.clear()


async def race(wait) -> bool:
    """Is a loop that waits with `wait` over once cancelled just as its event is set?"""
    event = asyncio.Event()
    task = asyncio.create_task(waiting_loop(event, wait))
    await asyncio.sleep(0)  # it waits
    event.set()
    task.cancel()
    await asyncio.wait([task], timeout=0.5)
    over = task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return over


async def with_wait_for(event: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), 10)


async def test_a_cancel_as_the_event_is_set_is_not_lost():
    assert await race(lambda e: wait_event(e, 10))
    assert await race(lambda e: wait_event(e, None))


async def test_wait_for_loses_it_on_3_11_which_is_why():
    assert await race(with_wait_for) is (sys.version_info >= (3, 12))


async def test_wait_event_times_out_and_says_whether_it_is_set():
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0) is True


async def test_cancel_and_wait_insists_on_a_task_that_swallows_a_cancel():
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed.append(1)
        await asyncio.sleep(10)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, step=0.01), 2)
    assert task.cancelled() and swallowed == [1]
