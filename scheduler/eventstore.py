"""The event feeds (eventlog.py) in etcd: each app's feed is the key `apps/<app>/events`, a
JSON list written whole, in batches: at most once every FLUSH_INTERVAL seconds per app, never
once per event (a crash loop makes many). What changed within the last interval before the
scheduler stops is written when it stops (`flush`); a scheduler killed outright loses at most
that last second."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scheduler.eventlog import EventLog
from scheduler.store import Store, StoreUnavailable

log = logging.getLogger("scheduler.events")
FLUSH_INTERVAL = 1.0  # seconds between two writes of the feeds


async def flush(store: Store, events: EventLog, written: Callable[[str, int], None]) -> bool:
    """Write every changed feed now (one transaction per app: a feed is up to 256 KiB);
    `written(app, revision)` after each. False if a write failed (etcd did not answer): what
    was not written is written next time."""
    apps = events.take_dirty()
    for i, app in enumerate(apps):
        try:
            revisions = await store.write({store.key("apps", app, "events"): events.encode(app)})
        except BaseException as e:  # etcd down, anything, or cancelled: written later
            events.mark_dirty(apps[i:])
            if not isinstance(e, Exception):
                raise
            log.warning("events of %d apps not written yet: %s", len(apps) - i,
                        e if isinstance(e, StoreUnavailable) else repr(e))
            return False
        written(app, max(revisions.values()))
    return True


async def keep(store: Store, events: EventLog, written: Callable[[str, int], None],
               interval: float = FLUSH_INTERVAL) -> None:
    """Write the feeds that changed, then wait `interval` before the next write; never
    returns."""
    while True:
        await events.changed.wait()
        await flush(store, events, written)
        await asyncio.sleep(interval)  # a rate, not a poll: the next write waits for a change
