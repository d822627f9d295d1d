"""One scheduler replica: it stands in the election (election.py) and, while it leads, runs a
Scheduler of its own for that term: recovered from etcd, writing only under the term's fence,
pushing only while its lease is sure to be alive. A term that ends takes its Scheduler with
it (its agents' streams end, its tasks stop); the next term starts from etcd again, as a
restarted scheduler does.

Followers serve no state: Control calls are forwarded to the leader (forward.py), agents are
sent to it (agentlink.py). Both ask `wait_leader`.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from common.aio import cancel_and_wait
from common.limits import AGENT_REDIAL_MAX
from scheduler import eventstore, instruments
from scheduler.election import ETCD_ERRORS, Election
from scheduler.leadership import Candidate
from scheduler.push import LinkTimes
from scheduler.reconciler import Scheduler
from scheduler.store import Store

log = logging.getLogger("scheduler")
RESTAND_DELAY = 0.5  # seconds before standing again after a candidacy ended


async def _end(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for it to end; an error it ended with is logged. (A cancel of
    the task that waits is not swallowed: asyncio.wait raises it.)"""
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("%s ended: %r", task.get_name(), task.exception())
    await cancel_and_wait(task)


class NoLeader(RuntimeError):
    """No replica leads (an election is under way, or etcd cannot be reached)."""


class Replica:
    def __init__(self, store: Store, election: Election,
                 make: Callable[[Store, LinkTimes], Scheduler], times: LinkTimes) -> None:
        self.store = store          # unfenced: reads only; each term writes through its fence
        self.election = election
        self.make = make
        self.times = times
        self.scheduler: Scheduler | None = None
        self.on_health: Callable[[bool], Awaitable[None]] | None = None  # told each change
        self.started = time.time()
        self._seen: Candidate | None = None  # the leader last seen, for the metrics
        # How long a call waits for a leader: a dead one's lease ends within the ttl, etcd
        # notices within about half a second, and the next recovers within about one more.
        self.leader_wait = election.ttl + 2.0

    # ---- what the services ask -----------------------------------------------------

    @property
    def name(self) -> str:
        return self.election.name

    @property
    def address(self) -> str:
        return self.election.address

    def leading(self) -> bool:
        return self.scheduler is not None and self.election.leading()

    def current(self) -> Scheduler | None:
        """The term's Scheduler while this replica leads, else None."""
        return self.scheduler if self.leading() else None

    async def wait_leader(self, deadline: float) -> Candidate:
        """The leader (this replica or another) once one is known, by `deadline` (monotonic);
        NoLeader if none is by then. While this replica is elected but still recovering, it
        waits for that."""
        while True:
            leader = self.election.leader
            if leader is not None and (leader.key != self._my_key() or self.leading()):
                return leader
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoLeader("no scheduler leads (an election is under way, or etcd cannot "
                               "be reached)")
            await self.election.changed(min(left, 0.5))

    def _my_key(self) -> bytes | None:
        me = self.election.me
        return me.key if me is not None else None

    # ---- standing and leading ------------------------------------------------------

    async def run(self) -> None:
        """Stand, lead when elected, stand again when a candidacy ends; never returns
        (SystemExit if another replica took this one's name)."""
        observer = asyncio.create_task(self.election.observe(), name="candidates")
        watcher = asyncio.create_task(self._watch_leader(), name="leader")
        try:
            delay = RESTAND_DELAY
            while True:
                try:
                    await self._stand()
                    delay = RESTAND_DELAY
                except ETCD_ERRORS as e:
                    log.warning("cannot stand for leader: %s; trying again", e)
                    delay = min(delay * 2, 5.0)
                except Exception:  # noqa: BLE001 - a bug must not end the replica: it says so
                    log.exception("the candidacy failed; standing again")
                    delay = min(delay * 2, 5.0)
                if self.election.replaced:
                    log.error("another scheduler named %s took this one's place in the "
                              "election: stopping (give each replica its own --name)",
                              self.name)
                    raise SystemExit(1)
                await asyncio.sleep(delay)
        finally:
            observer.cancel()
            watcher.cancel()

    async def _stand(self) -> None:
        election = self.election
        await election.campaign()
        keeper = asyncio.create_task(election.keep(), name="lease")
        term: asyncio.Task[None] | None = None
        try:
            while not keeper.done() and election.me is not None:
                if term is None and election.leading():
                    term = asyncio.create_task(self._lead(), name="term")
                if term is not None and (term.done() or not election.leading()):
                    # A term ends when the lease is not sure to be alive; the candidacy goes
                    # on, and leads again (a new term, the same epoch) once it is renewed.
                    await _end(term)
                    term = None
                await election.changed(election.validity.renew_every)
        finally:
            for task in (term, keeper):
                if task is not None:
                    await _end(task)
            await election.resign()

    async def _lead(self) -> None:
        """One term: recover, serve, and on any end stop everything it started."""
        election = self.election
        me = election.me
        assert me is not None
        term: list[Scheduler] = []

        def leads() -> bool:  # this term, not a later one (even of the same candidacy)
            return bool(term) and self.scheduler is term[0] and not term[0].term_over \
                and election.leading()
        times = dataclasses.replace(self.times, epoch=me.revision, leads=leads)
        fence = await election.begin_term()
        s = self.make(self.store.fenced(fence), times)
        term.append(s)
        tasks: list[asyncio.Task] = []
        log.info("elected leader (epoch %d): recovering from etcd", me.revision)
        try:
            revision = await s.recover()
            # Agents redial with a backoff of up to AGENT_REDIAL_MAX: that long plus a ttl
            # before any counts as down.
            s.agents.grace(self.times.agent_ttl + AGENT_REDIAL_MAX)
            self.scheduler = s
            log.info("leading since epoch %d", me.revision)
            tasks = [asyncio.create_task(s.run(), name="reconcile"),
                     asyncio.create_task(s.store.watch_apps(revision, s.app_event,
                                                            s.apps_lost), name="watch"),
                     asyncio.create_task(eventstore.keep(s.store, s.events, s.events_written),
                                         name="events")]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:  # none returns: if one does, the term ends and says why
                log.error("task %s ended: %r", t.get_name(),
                          None if t.cancelled() else t.exception())
        finally:
            self.scheduler = None
            for t in tasks:
                t.cancel()
            s.end_term()
            if tasks:
                with contextlib.suppress(TimeoutError, Exception):  # the last second's events
                    await asyncio.wait_for(eventstore.flush(s.store, s.events,
                                                            s.events_written), 2)
            log.info("no longer leading (epoch %d)", me.revision)

    async def _watch_leader(self) -> None:
        """The leader gauge and the count of leadership changes, as this replica sees them;
        its health (in contact with etcd) to on_health."""
        healthy: bool | None = None
        while True:
            now = self.election.healthy()
            if now != healthy and self.on_health is not None:
                healthy = now
                await self.on_health(now)
            leader = self.election.leader
            if leader is not None and (self._seen is None or leader.key != self._seen.key):
                if self._seen is not None:
                    instruments.LEADER_CHANGES.inc()
                log.info("leader: %s at %s (epoch %d)", leader.name, leader.address,
                         leader.revision)
                self._seen = leader
            instruments.LEADER.set(int(self.leading()))
            await self.election.changed(1.0)

    async def stop(self) -> None:
        """Give up leadership at once (another replica takes over without waiting for the
        lease to end)."""
        await self.election.resign()
