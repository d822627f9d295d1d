"""The scheduler: its world, the reconcile loop (evaluate -> apply -> push, like Nomad's
reconciler) and the narrow API that Control and AgentLink call (its parts: appchanges.py for
releases and counts, rolloutsteps.py for rollouts, sessions.py for agents).

One asyncio task owns reconciliation; everything else (ctl calls, agent messages, the etcd watch,
the heartbeat clock) changes the world through the methods here and pokes `wake`. A lost or
repeated poke does no harm. Every etcd write is made under `lock`, so memory follows etcd in
the order of the writes, and the watch skips what this scheduler wrote itself (per-key revision).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from common.aio import wait_event
from common.appdef import DEFAULT_DEREGISTER_TIMEOUT
from scheduler import endpoints, instruments
from scheduler.agents import AgentTable
from scheduler.appchanges import AppChanges
from scheduler.eventlog import EventLog
from scheduler.placement import Assigned, InstanceKey, Plan, plan
from scheduler.push import LinkTimes, push_all
from scheduler.readmodels import ReadModels
from scheduler.records import (
    AppEvent,
    Snapshot,
    decode,
)
from scheduler.rolloutsteps import RolloutSteps
from scheduler.sessions import AgentEvents
from scheduler.store import Conflict, Store, StoreUnavailable
from scheduler.world import Apps, World, runs_release

log = logging.getLogger("scheduler")
APPLY_ATTEMPTS = 3  # a conflicting write is re-read and re-planned this many times per pass
RETRY_UNAVAILABLE = 0.5  # seconds before the next pass when etcd did not answer
RETRY_ERROR = 1.0        # seconds before the next pass after an unexpected error
ROLLOUT_TICK = 0.2       # seconds between passes while a rollout or a surge waits on time


class Scheduler(AgentEvents, AppChanges, RolloutSteps):
    """The scheduler's state and its reconcile loop."""

    def __init__(self, store: Store, times: LinkTimes, release_history: int = 50,
                 forget_after: float = 86400.0) -> None:
        self.store = store
        self.times = times
        self.release_history = release_history  # releases kept per app (and any still in use)
        self.world = World(AgentTable(times.agent_ttl, forget_after=forget_after))
        self.read = ReadModels(self.world)
        self.lock = asyncio.Lock()  # serializes etcd writes and the memory changes they make
        self.wake = asyncio.Event()
        self.started = time.time()
        self.events = EventLog(time.time)  # what happened to each app (`ctl events`)
        self._app_revisions: dict[str, int] = {}  # "apps/..." key -> mod_revision applied
        self._apps_stale = False        # the watch was compacted away: re-read apps
        self._assignments_stale = False  # a write failed midway: re-read assignments
        self.endpoints = endpoints.Endpoints()  # what load balancers follow (endpoints.py)
        self.release_output: Callable[[str, str, str], Coroutine[Any, Any, None]] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.term_over = False  # end_term()

    # ---- start-up and etcd ---------------------------------------------------------

    async def recover(self) -> int:
        """Load everything from etcd; retry until etcd answers. Returns the revision read."""
        delay = 0.2
        while True:
            try:
                snap = await self.store.load()
                break
            except StoreUnavailable as e:
                log.warning("%s; retrying", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._set_apps(snap)
        self.world.set_assignments(snap.assignments, snap.assignment_revisions, recovered=True)
        self.agents.restore(snap.agents)
        self.read.rebuild()
        log.info("recovered from etcd at revision %d: %d apps, %d agents, %d assignments",
                 snap.revision, len(snap.current), len(snap.agents), len(snap.assignments))
        return snap.revision

    def _set_apps(self, snap: Snapshot) -> None:
        self.world.apps = Apps(snap.releases, snap.current, snap.formation, snap.scales,
                               snap.rollouts)
        self._app_revisions = dict(snap.app_revisions)
        for app, events in snap.events.items():  # merged: newer events in memory stay
            self.events.restore(app, events)

    def app_event(self, event: AppEvent) -> None:
        """A change under apps/ seen by the watch: applied unless memory already has it (this
        scheduler's own writes, or anything older than what it holds)."""
        if event.revision <= self._app_revisions.get(event.path, 0):
            return
        self._app_revisions[event.path] = event.revision
        parts = event.path.split("/")
        apps = self.world.apps
        if event.value is None:
            match parts:
                case ["apps", app, "releases", version] if version.isdigit():
                    apps.releases.get(app, {}).pop(int(version), None)
                case ["apps", app, "current"]:
                    apps.current.pop(app, None)
                case ["apps", app, "formation", ptype]:
                    apps.formation.pop((app, ptype), None)
                case ["apps", app, "scales"]:
                    apps.scales.pop(app, None)
                case ["apps", app, "events"]:
                    self.events.forget(app)
                case ["apps", app, "rollout"]:
                    apps.rollouts.pop(app, None)
        else:
            snap = Snapshot()
            decode(snap, parts, event.value)
            for app, versions in snap.releases.items():
                apps.releases.setdefault(app, {}).update(versions)
            apps.current.update(snap.current)
            apps.formation.update(snap.formation)
            apps.scales.update(snap.scales)
            for app, events in snap.events.items():  # another writer's: merged
                self.events.restore(app, events)
            apps.rollouts.update(snap.rollouts)
        if parts[-1] == "current":
            self.read.touch_current(parts[1])
        self.poke()

    def apps_lost(self) -> None:
        """The watch could not resume where it was: re-read apps on the next pass."""
        self._apps_stale = True
        self.poke()

    def events_written(self, app: str, revision: int) -> None:
        """The app's event feed is in etcd at revision (eventstore.py): the watch skips it."""
        self._app_revisions[f"apps/{app}/events"] = revision

    # ---- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever poked, and mark agents down when their deadline passes. Never
        returns; an unexpected error is logged with its traceback and the loop goes on."""
        while True:
            deadline = self.agents.next_deadline()
            timeout = None if deadline is None or deadline == float("inf") \
                else max(0.0, deadline - time.monotonic())
            if self.waits_on_time():
                timeout = ROLLOUT_TICK if timeout is None else min(timeout, ROLLOUT_TICK)
            phase = self.phase_wait(time.time())
            if phase is not None:
                timeout = phase if timeout is None else min(timeout, phase)
            held = self.endpoints.next_deadline()  # a deregistration that may time out
            if held is not None:
                held = max(0.0, held - time.monotonic())
                timeout = held if timeout is None else min(timeout, held)
            await wait_event(self.wake, timeout)
            self.wake.clear()
            if not self.times.leads():  # a deposed leader acts on nothing (replica.py ends
                await asyncio.sleep(ROLLOUT_TICK)  # its term): not even on its clock
                self.wake.set()
                continue
            try:
                self.expire_agents()
                for name in self.agents.forgotten():
                    await self.remove_agent(name, why="down for "
                                            f"{self.agents.forget_after:g}s")
                await self.reconcile()
            except (StoreUnavailable, Conflict) as e:
                log.warning("reconcile deferred: %s", e)
                await asyncio.sleep(RETRY_UNAVAILABLE)
                self.wake.set()
            except Exception:  # noqa: BLE001 - the loop must outlive any bug; it says so
                instruments.RECONCILE_ERRORS.inc()
                log.exception("reconcile failed; retrying in %.1fs", RETRY_ERROR)
                await asyncio.sleep(RETRY_ERROR)
                self.wake.set()

    def poke(self) -> None:
        self.wake.set()

    def end_term(self) -> None:
        """This scheduler's term is over: end every agent's stream (they dial the leader),
        and every stream that follows its state (events, endpoints: they follow the next)."""
        self.term_over = True
        for entry in self.agents.entries.values():
            if entry.session is not None:
                entry.session.outbox.put_nowait(None)
        self.events.close()
        for watcher in self.endpoints.watchers.values():
            watcher.wake()

    async def reconcile(self) -> Plan:
        started = time.monotonic()
        async with self.lock:
            for attempt in range(1, APPLY_ATTEMPTS + 1):
                try:
                    await self._reread()
                    result = await self._evaluate_and_apply()
                    break
                except Conflict:
                    instruments.APPLY_CONFLICTS.inc()
                    self._assignments_stale = True
                    if attempt == APPLY_ATTEMPTS:
                        raise
                except StoreUnavailable:
                    self._assignments_stale = True  # some batches may have landed
                    raise
            for app, releases in list(self.world.apps.releases.items()):
                if len(releases) > self.release_history:
                    await self._prune(app)
            self._push_all()
        instruments.RECONCILE_SECONDS.observe(time.monotonic() - started)
        return result

    def _push_all(self) -> None:
        """Push every agent its list. With load balancers watching, first publish the
        endpoints of those lists, and keep the copies they have not let go of yet."""
        ends, world = self.endpoints, self.world
        if not ends.active():
            ends.idle()
            push_all(world, self.times)
            return
        now, entries = time.monotonic(), world.agents.entries
        lists = {name: world.list_for(name) for name, e in entries.items() if not e.down}
        # After a start, an agent not yet heard from would look empty: wait for every one.
        if all(e.down or e.last_seen for e in entries.values()):
            ends.publish(endpoints.found(lists, lambda a: entries[a].record.address,
                                         self._port), now, self._deregister_timeout)
        for released in ends.settle(now):
            instruments.DEREGISTER_SECONDS.observe(released.waited)
            if released.timed_out:
                instruments.DEREGISTER_TIMEOUTS.inc()
        push_all(world, self.times, lists, ends.kept())

    def _port(self, agent: str, key: InstanceKey, release: int, generation: int) -> int:
        """The copy's port if its agent reports it running on its release, else 0."""
        report = self.world.agents.entries[agent].report(key, release, generation)
        return report.port if report is not None and runs_release(report, release) else 0

    def _deregister_timeout(self, app: str, ptype: str, release: int) -> float:
        """The type's deregister_timeout as the app's current release says (a deploy that
        raises it applies to its own rollout's stops), else as the copy's release did."""
        apps = self.world.apps
        for version in (apps.current.get(app), release):
            found = apps.releases.get(app, {}).get(version or -1)
            t = found.types.get(ptype) if found is not None else None
            if t is not None:
                return t.deregister_timeout
        return DEFAULT_DEREGISTER_TIMEOUT

    async def _reread(self) -> None:
        """After a failed write or a lost watch, etcd (not memory) is the truth."""
        if self._apps_stale:
            self._set_apps(await self.store.load("apps"))
            self._apps_stale = False
            self.read.rebuild()
        if self._assignments_stale:
            snap = await self.store.load("assignments")
            self.world.set_assignments(snap.assignments, snap.assignment_revisions)
            self._assignments_stale = False
            self.read.rebuild()

    async def _write(self, changes: Mapping[InstanceKey, Assigned | None]) -> None:
        """Compare-and-set on the revisions the plan was computed from."""
        world = self.world
        revisions = await self.store.write_assignments(
            changes, {k: world.revisions.get(k, 0) for k in changes})
        world.assign(changes, revisions)
        self.read.touch(changes)

    async def _evaluate_and_apply(self) -> Plan:
        world, apps = self.world, self.world.apps
        now = time.time()
        handed = world.finished_handoffs(now, self._proof)
        if handed:
            await self._write(handed)
        await self._begin_rollouts(now)
        await self._drive_release_phases(now)
        serving = apps.serving()
        desired = apps.desired(serving)
        once = apps.at_most_once(serving)
        rolling = {(app, t) for app, t in desired if app in apps.rollouts}
        result = plan(desired, serving, self.agents.views(), world.assignments,
                      once, world.blocked(once), world.running_on(serving), rolling)
        if not result.empty():
            after = result.assignments_after(world.assignments, serving)
            changes: dict[InstanceKey, Assigned | None] = dict.fromkeys(
                (*result.stop, *result.unassign))
            changes.update({k: after[k] for k in (*result.place, *result.migrate,
                                                  *result.update)})
            moving = self.moving(result.migrate)  # where they were, for `ctl events`
            await self._write(changes)
            self.moved(moving)
            instruments.PLACEMENTS.inc(len(result.place) + len(result.migrate))
            instruments.STOPS.inc(len(result.stop))
            if result.place or result.migrate or result.stop:
                log.info("plan: %d placed, %d migrated, %d updated, %d stopped, %d pending",
                         len(result.place), len(result.migrate), len(result.update),
                         len(result.stop), len(result.pending))
        self.read.touch(world.set_pending(result.pending))
        await self._drive_rollouts(now)
        return result
