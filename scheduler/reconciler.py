"""The scheduler: its world, the reconcile loop (evaluate -> apply -> push, like Nomad's
reconciler) and the narrow API that Control and AgentLink call.

One asyncio task owns reconciliation; everything else (ctl calls, agent messages, the etcd watch,
the heartbeat clock) changes the world through the methods here and pokes `wake`. A lost or
repeated poke does no harm. Every etcd write is made under `lock`, so memory follows etcd in
the order of the writes, and the watch skips what this scheduler wrote itself (per-key revision).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from common.appdef import ProcessType, Release
from scheduler import instruments, releases
from scheduler.agents import AgentTable
from scheduler.errors import Rejected
from scheduler.placement import Assigned, InstanceKey, Plan, plan
from scheduler.push import LinkTimes, push_all
from scheduler.readmodels import ReadModels
from scheduler.records import AppEvent, ScaleRecord, Snapshot, decode
from scheduler.releases import Content
from scheduler.sessions import AgentEvents
from scheduler.store import Conflict, Store, StoreUnavailable
from scheduler.world import Apps, World

log = logging.getLogger("scheduler")
APPLY_ATTEMPTS = 3  # a conflicting write is re-read and re-planned this many times per pass
RETRY_UNAVAILABLE = 0.5  # seconds before the next pass when etcd did not answer
RETRY_ERROR = 1.0        # seconds before the next pass after an unexpected error


class Scheduler(AgentEvents):
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
        self._app_revisions: dict[str, int] = {}  # "apps/..." key -> mod_revision applied
        self._apps_stale = False        # the watch was compacted away: re-read apps
        self._assignments_stale = False  # a write failed midway: re-read assignments

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
        self.world.set_assignments(snap.assignments, snap.assignment_revisions)
        self.agents.restore(snap.agents)
        self.read.rebuild()
        log.info("recovered from etcd at revision %d: %d apps, %d agents, %d assignments",
                 snap.revision, len(snap.current), len(snap.agents), len(snap.assignments))
        return snap.revision

    def _set_apps(self, snap: Snapshot) -> None:
        self.world.apps = Apps(snap.releases, snap.current, snap.formation, snap.scales)
        self._app_revisions = dict(snap.app_revisions)

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
        else:
            snap = Snapshot()
            decode(snap, parts, event.value)
            for app, versions in snap.releases.items():
                apps.releases.setdefault(app, {}).update(versions)
            apps.current.update(snap.current)
            apps.formation.update(snap.formation)
            apps.scales.update(snap.scales)
        if parts[-1] == "current":
            self.read.touch_current(parts[1])
        self.poke()

    def apps_lost(self) -> None:
        """The watch could not resume where it was: re-read apps on the next pass."""
        self._apps_stale = True
        self.poke()

    # ---- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever poked, and mark agents down when their deadline passes. Never
        returns; an unexpected error is logged with its traceback and the loop goes on."""
        while True:
            deadline = self.agents.next_deadline()
            timeout = None if deadline is None or deadline == float("inf") \
                else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
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
            push_all(self.world, self.times)
        instruments.RECONCILE_SECONDS.observe(time.monotonic() - started)
        return result

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

    async def _write(self, changes: dict[InstanceKey, Assigned | None]) -> None:
        """Compare-and-set on the revisions the plan was computed from."""
        world = self.world
        revisions = await self.store.write_assignments(
            changes, {k: world.revisions.get(k, 0) for k in changes})
        world.assign(changes, revisions)
        self.read.touch(changes)

    async def _evaluate_and_apply(self) -> Plan:
        world, apps = self.world, self.world.apps
        handed = world.finished_handoffs()
        if handed:
            await self._write(dict(handed))
        once = apps.at_most_once()
        result = plan(apps.desired(), apps.current, self.agents.views(), world.assignments,
                      once, world.blocked(once), world.running_on())
        if not result.empty():
            after = result.assignments_after(world.assignments, apps.current)
            changes: dict[InstanceKey, Assigned | None] = dict.fromkeys(
                (*result.stop, *result.unassign))
            changes.update({k: after[k] for k in (*result.place, *result.migrate,
                                                  *result.update)})
            await self._write(changes)
            instruments.PLACEMENTS.inc(len(result.place) + len(result.migrate))
            instruments.STOPS.inc(len(result.stop))
            if result.place or result.migrate or result.stop:
                log.info("plan: %d placed, %d migrated, %d updated, %d stopped, %d pending",
                         len(result.place), len(result.migrate), len(result.update),
                         len(result.stop), len(result.pending))
        self.read.touch(world.set_pending(result.pending))
        return result

    # ---- what Control calls -----------------------------------------------------------

    async def deploy(self, app: str, types: dict[str, ProcessType], env: dict[str, str],
                     author: str = "") -> int:
        """A new release of app from a Procfile (its env on top of the current config), made
        current; returns its version."""
        version, _ = await self.new_release(
            app, lambda cur: releases.deployed(cur, types, env), author)
        return version

    async def new_release(self, app: str, make: Callable[[Release | None], Content | None],
                          author: str = "") -> tuple[int, bool]:
        """A new release of app with what `make` returns from the current one, made current:
        (its version, True); (the current version, False) if `make` says nothing changes.
        Under the lock: two changes never build on the same release."""
        apps = self.world.apps
        async with self.lock:
            content = make(apps.current_release(app))
            if content is None:
                return apps.current.get(app, 0), False
            types = content.types
            version = max(apps.releases.get(app, {}), default=0) + 1
            release = Release(version, types, content.env, time.time(), author,
                              content.description)
            revision = await self.store.create_release(app, release)
            if not revision:
                raise Rejected("another deploy of this app won the race; try again",
                               grpc.StatusCode.ABORTED)
            self._app_revisions[f"apps/{app}/releases/{version}"] = revision
            self._app_revisions[f"apps/{app}/current"] = revision
            # Heroku's default: a new app's web type starts with one instance.
            if "web" in types and app not in apps.current and (app, "web") not in apps.formation:
                await self._set_counts(app, {"web": 1})
            apps.releases.setdefault(app, {})[version] = release
            apps.current[app] = version
            self.read.touch_current(app)
            await self._prune(app)
        self.poke()
        return version, True

    async def _prune(self, app: str) -> None:
        """Forget the app's oldest releases beyond the history, except any still assigned."""
        apps = self.world.apps
        versions = sorted(apps.releases.get(app, {}))
        keep = set(versions[-self.release_history:]) | {apps.current.get(app, 0)}
        keep |= {w.release for k, w in self.world.assignments.items() if k.app == app}
        drop = [v for v in versions if v not in keep]
        if drop:
            await self.store.drop_releases(app, drop)
            for version in drop:  # the watch may have seen the deletes already
                apps.releases[app].pop(version, None)
            log.info("app %s: forgot releases %s (history %d)", app,
                     ", ".join(f"v{v}" for v in drop), self.release_history)

    async def scale(self, app: str, counts: dict[str, int], author: str = "",
                    undo: bool = False) -> dict[str, int]:
        """Set desired counts of types of app's current release (undo: back to the counts
        before the last change), recorded in the app's formation history; returns all of its
        counts."""
        release = self.world.apps.current_release(app)
        if release is None:
            raise Rejected(f"app {app!r} has no release yet: run 'ctl deploy PROCFILE' first",
                           grpc.StatusCode.FAILED_PRECONDITION)
        async with self.lock:
            history = self.world.apps.scales.get(app, [])
            if undo:
                if not history:
                    raise Rejected(f"nothing to undo: {app}'s counts were never changed",
                                   grpc.StatusCode.FAILED_PRECONDITION)
                counts = {t: n for t, n in history[-1].before.items() if t in release.types}
            unknown = sorted(set(counts) - set(release.types))
            if unknown:
                raise Rejected(f"unknown process type {unknown[0]!r} (app {app!r} has: "
                               f"{', '.join(sorted(release.types))})")
            formation = self.world.apps.formation
            before = {t: formation.get((app, t), 0) for t in counts}
            changed = {t: n for t, n in counts.items() if before[t] != n}
            record = ScaleRecord(time.time(), author, {t: before[t] for t in changed},
                                 changed, undo) if changed else None
            await self._set_counts(app, counts, record)
        self.poke()
        return self.world.apps.counts(app)

    async def _set_counts(self, app: str, counts: dict[str, int],
                          record: ScaleRecord | None = None) -> None:
        """Write counts (and add record to the app's history) in one etcd transaction."""
        history = None
        if record is not None:
            history = [*self.world.apps.scales.get(app, []), record]
        revision, kept = await self.store.set_formation(app, counts, history)
        for ptype, n in counts.items():
            self._app_revisions[f"apps/{app}/formation/{ptype}"] = revision
            self.world.apps.formation[(app, ptype)] = n
        if kept is not None:
            self._app_revisions[f"apps/{app}/scales"] = revision
            self.world.apps.scales[app] = kept
