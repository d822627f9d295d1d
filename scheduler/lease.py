"""The leader's lease kept alive: renewed every ttl/4 on a thread of its own, over an etcd
connection of its own, so a long pass of the reconcile loop cannot cost the lease; while
the loop has not shown a sign of life for LOOP_STALL (wedged), the thread stops renewing and
another replica takes over. The rules of how long a renewal counts: leadership.Validity."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler.etcdconn import ETCD_ERRORS, Connection
from scheduler.leadership import Validity

log = logging.getLogger("scheduler.election")
TICK = 0.5          # seconds between two signs of life of the loop to the lease thread
LOOP_STALL = 30.0   # seconds without one after which the lease is let go


async def keep(conn: Connection, lease: int, validity: Validity,
               changed: Callable[[], None]) -> None:
    """Keep `lease` alive, extending `validity` at each renewal and calling `changed` (on
    this loop); return once the lease is surely gone: etcd says so, or this loop is wedged."""
    loop = asyncio.get_running_loop()
    ended, stop = asyncio.Event(), threading.Event()
    tick = [time.monotonic()]

    def renewing() -> None:
        try:
            asyncio.run(_renew(conn, lease, validity, stop, tick, loop, changed))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(ended.set)
    thread = threading.Thread(target=renewing, name="lease", daemon=True)
    thread.start()
    try:
        while not ended.is_set():
            tick[0] = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), TICK)
    finally:
        stop.set()


async def _renew(parent: Connection, lease: int, validity: Validity, stop: threading.Event,
                 tick: list[float], loop: asyncio.AbstractEventLoop,
                 changed: Callable[[], None]) -> None:
    """The lease thread's loop. A renewal that comes late (etcd electing its own leader,
    say) only makes the leader stop for a while: the lease is alive, its key too, so the
    same candidacy leads again, same epoch. An endpoint that does not answer is left for
    the next within a renewal's period (the connection's own timeout)."""
    conn = parent.twin(timeout=max(0.5, validity.renew_every))
    last_error, lapsed = "", False

    def tell() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed
            loop.call_soon_threadsafe(changed)
    try:
        while not stop.is_set():
            sent = time.monotonic()
            if sent - tick[0] > LOOP_STALL:
                log.error("the scheduler's loop has not run for %.0fs: no longer renewing "
                          "its lease", sent - tick[0])
                return
            if not lapsed and not validity.valid(sent):
                lapsed = True
                log.warning("lease not renewed in time (%s): not leading until it is",
                            last_error)
                tell()
            try:
                reply: Any = await asyncio.wait_for(
                    conn.call("lease", lambda c: c.refresh_lease(lease)),
                    max(2 * validity.renew_every, validity.until - sent))
            except ETCD_ERRORS as e:
                last_error = str(e) or type(e).__name__
                await _nap(stop, validity.renew_every / 2)
                continue
            if reply is None or reply.TTL <= 0:
                log.warning("etcd says this scheduler's lease ended: standing again")
                return
            validity.renewed(sent, float(reply.TTL))
            if lapsed:
                lapsed = False
                log.info("lease renewed again")
            tell()
            await _nap(stop, validity.renew_every)
    finally:
        await conn.close()


async def _nap(stop: threading.Event, seconds: float) -> None:
    """Sleep, waking early once `stop` is set (a thread blocked on the event: the loop's
    thread is not woken by polling)."""
    await asyncio.to_thread(stop.wait, seconds)
