"""What Control calls to change an app: new releases (deploy, config, rollback) and counts
(scale, undo). A part of the Scheduler (reconciler.py), kept apart so each file says one
thing; each change is made under the Scheduler's lock, written to etcd, then poked into the
reconcile loop (which rolls a new release out: rolloutsteps.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from common.appdef import DEFAULT_RELEASE_TIMEOUT, ProcessType, Release
from scheduler import releases
from scheduler.errors import Rejected
from scheduler.eventlog import EventLog, scale_text
from scheduler.readmodels import ReadModels
from scheduler.records import ScaleRecord
from scheduler.releases import Content
from scheduler.store import Store
from scheduler.world import World

log = logging.getLogger("scheduler")


class AppChanges:
    """The apps' side of the Scheduler; it provides these attributes."""

    store: Store
    world: World
    read: ReadModels
    events: EventLog
    lock: asyncio.Lock
    poke: Callable[[], None]
    release_history: int
    _app_revisions: dict[str, int]

    async def deploy(self, app: str, types: dict[str, ProcessType], env: dict[str, str],
                     author: str = "", release_command: str = "",
                     release_timeout: float = DEFAULT_RELEASE_TIMEOUT) -> int:
        """A new release of app from a Procfile (its env on top of the current config), made
        current; returns its version."""
        version, _ = await self.new_release(
            app, lambda cur: releases.deployed(cur, types, env, release_command,
                                               release_timeout), author)
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
                              content.description, content.release_command,
                              content.release_timeout,
                              bool(content.release_command) and content.run_release)
            # Heroku's default: a new app's web type starts with one instance. Whether it is
            # new is read before the write: the watch may deliver the release meanwhile.
            first_web = "web" in types and app not in apps.current \
                and (app, "web") not in apps.formation
            revision = await self.store.create_release(app, release)
            if not revision:
                raise Rejected("another deploy of this app won the race; try again",
                               grpc.StatusCode.ABORTED)
            self._app_revisions[f"apps/{app}/releases/{version}"] = revision
            self._app_revisions[f"apps/{app}/current"] = revision
            if first_web:
                await self._set_counts(app, {"web": 1})
            apps.releases.setdefault(app, {})[version] = release
            apps.current[app] = version
            self.read.touch_current(app)
            self.events.add(app, content.event, f"v{version} {content.description}", author)
            await self._prune(app)
        self.poke()
        return version, True

    async def _prune(self, app: str) -> None:
        """Forget the app's oldest releases beyond the history, except any still assigned."""
        apps = self.world.apps
        versions = sorted(apps.releases.get(app, {}))
        keep = set(versions[-self.release_history:]) | {apps.current.get(app, 0)}
        keep |= {v for k, w in self.world.assignments.items() if k.app == app
                 for v in (w.release, w.old_release)}
        record = apps.rollouts.get(app)
        if record is not None:
            keep |= {record.release, record.previous, record.good()}
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
            if record is not None:
                self.events.add(app, "scale", scale_text(record.before, record.after, undo),
                                author)
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
