"""What the scheduler does for rollouts (docs/releases.md): begin one for each new current
release, drive it a pass at a time (scheduler/rollouts.py decides, this writes), and when it
fails, revert it or mark it failed. A part of the Scheduler (reconciler.py), kept apart so each
file says one thing; every method runs under the Scheduler's lock, inside a reconcile pass.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import replace
from typing import Any

import grpc

from common.appdef import Release, effective_deploy
from scheduler import releasephase, rollouts
from scheduler.errors import Rejected
from scheduler.eventlog import EventLog
from scheduler.placement import RELEASE_RUN, Assigned, InstanceKey
from scheduler.readmodels import ReadModels
from scheduler.records import ACTIVE, FAILED, RELEASING, REVERTED, ROLLING, Rollout
from scheduler.store import Store
from scheduler.world import World

log = logging.getLogger("scheduler")


MAX_RESTART_TARGETS = 100  # types and ids one `ctl restart` names


class RolloutSteps:
    """The rollouts' side of the Scheduler; it provides these attributes."""

    lock: asyncio.Lock
    store: Store
    world: World
    read: ReadModels
    events: EventLog
    poke: Callable[[], None]
    _app_revisions: dict[str, int]
    # Copies a release phase's last lines of output into the app's events (scheduler/main.py
    # sets it: it reads them from the agent); None: not copied.
    release_output: Callable[[str, str, str], Coroutine[Any, Any, None]] | None
    _background: set[asyncio.Task[None]]

    async def _write(self, changes: Mapping[InstanceKey, Assigned | None]) -> None:
        raise NotImplementedError  # the Scheduler's

    async def restart(self, app: str, targets: list[str], author: str = ""
                      ) -> tuple[list[str], list[str], int]:
        """Restart app's instances on their release (docs/releases.md): the types named (all
        if none is) roll onto a new generation of their copies; the ids named restart alone.
        Returns (types, ids, release)."""
        apps = self.world.apps
        release = apps.current_release(app)
        if release is None:
            raise Rejected(f"app {app!r} has no release yet: run 'ctl deploy PROCFILE' first",
                           grpc.StatusCode.FAILED_PRECONDITION)
        if len(targets) > MAX_RESTART_TARGETS:
            raise Rejected(f"at most {MAX_RESTART_TARGETS} types and instances at once")
        types = sorted({t for t in targets if t in release.types})
        ids = sorted({t for t in targets if t not in release.types})
        for iid in ids:
            if iid.startswith(RELEASE_RUN):
                raise Rejected(f"{iid} is a release phase's run: it runs once, never again "
                               "(ctl rollback vN --run-release runs a release phase anew)",
                               grpc.StatusCode.FAILED_PRECONDITION)
            if InstanceKey(app, iid) not in self.world.assignments:
                raise Rejected(f"{iid!r} is neither a process type of {app} ("
                               f"{', '.join(sorted(release.types))}) nor one of its instances",
                               grpc.StatusCode.NOT_FOUND)
        if not targets:
            types = sorted(t for t in release.types if apps.formation.get((app, t), 0))
        async with self.lock:
            record = apps.rollouts.get(app)
            if record is not None and not record.released and record.status not in ACTIVE:
                raise Rejected(f"v{record.release}'s release phase failed: nothing runs it "
                               "to restart; deploy again", grpc.StatusCode.FAILED_PRECONDITION)
            if types and record is not None and record.status in ACTIVE:
                raise Rejected(f"the rollout of v{record.release} is under way: restart once "
                               "it finished", grpc.StatusCode.FAILED_PRECONDITION)
            if types:
                now = time.time()
                base = record if record is not None else rollouts.begin(None, release.version,
                                                                        now)
                await self._put_rollout(app, rollouts.restart(self.world, app, base, types, now))
            changes = {}
            for iid in ids:
                key = InstanceKey(app, iid)
                where = self.world.assignments.get(key)
                if where is None:  # scaled away since it was checked: nothing to restart
                    continue
                changes[key] = Assigned(where.agent, where.release,
                                        generation=where.generation + 1)
            if changes:
                await self._write(changes)
            self.events.add(app, "restart", "restart " + (", ".join(targets) or "every type"),
                            author)
        self.poke()
        return types, ids, release.version

    def waits_on_time(self) -> bool:
        """Has a rollout new copies in flight, whose min_healthy_time or healthy_deadline runs
        out with no report to say so? (Reports of a rolling app poke the loop themselves; a
        rollout that only waits for room, its instances pending, waits for no clock.)"""
        return any(r.status in ACTIVE and r.started_ids
                   for r in self.world.apps.rollouts.values())

    def phase_wait(self, now: float) -> float | None:
        """Seconds until a running release phase is overdue (releasephase.deadline): a pass
        then, in case its agent never says; None if none runs."""
        apps = self.world.apps
        waits = [releasephase.deadline(r, release) - now for app, r in apps.rollouts.items()
                 if r.status == RELEASING and r.phase_started
                 and (release := apps.releases.get(app, {}).get(r.release)) is not None]
        return max(0.0, min(waits)) + 0.01 if waits else None

    def _proof(self, key: InstanceKey, version: int) -> float:
        """Seconds a new copy of key on release `version` must run before it counts."""
        release = self.world.apps.releases.get(key.app, {}).get(version)
        ptype = release.types.get(key.type) if release is not None else None
        if ptype is None:
            return 0.0
        return effective_deploy(ptype).min_healthy_time or 0.0

    async def _put_rollout(self, app: str, record: Rollout) -> None:
        revision = await self.store.put_rollout(app, record)
        self._app_revisions[f"apps/{app}/rollout"] = revision
        self.world.apps.rollouts[app] = record

    async def _begin_rollouts(self, now: float) -> None:
        """A rollout for each app whose current release is not the one it rolls out (a new
        release, or a scheduler that kept none): it supersedes whatever was rolling."""
        apps = self.world.apps
        for app, version in sorted(apps.current.items()):
            old = apps.rollouts.get(app)
            if old is not None and old.release == version:
                continue
            doubles = rollouts.settle_doubles(self.world, app, version)
            if doubles:
                await self._write(doubles)
            release = apps.releases.get(app, {}).get(version)
            phase = release is not None and release.run_release
            await self._put_rollout(app, rollouts.begin(old, version, now, phase=phase))
            if old is not None and old.status in ACTIVE:
                log.info("app %s: rollout of v%d superseded by v%d", app, old.release, version)
            what = "release phase" if phase else "rollout"
            self.events.add(app, "rollout", f"v{version} {what} started" + (
                f" (supersedes v{old.release}'s)" if old is not None and old.status in ACTIVE
                else ""))

    def _under_way(self, status: str) -> Iterator[tuple[str, Rollout, Release]]:
        """(app, its rollout, the release it goes to) of each rollout in `status` whose
        release is (still) the app's current one."""
        apps = self.world.apps
        for app, record in sorted(apps.rollouts.items()):
            release = apps.releases.get(app, {}).get(record.release)
            if record.status == status and apps.current.get(app) == record.release \
                    and release is not None:
                yield app, record, release

    async def _go_back(self, app: str, back: int, record: Rollout) -> None:
        """Make release `back` current again with its rollout `record`, in one etcd write."""
        apps = self.world.apps
        revision = await self.store.revert(app, back, record)
        self._app_revisions[f"apps/{app}/current"] = revision
        self._app_revisions[f"apps/{app}/rollout"] = revision
        apps.current[app] = back
        apps.rollouts[app] = record
        self.read.touch_current(app)
        self.poke()

    async def _drive_release_phases(self, now: float) -> None:
        """Each release phase a pass further (scheduler/releasephase.py); runs that no
        rollout waits on are removed first."""
        stray = releasephase.strays(self.world)
        if stray:
            await self._write(stray)
        for app, record, release in self._under_way(RELEASING):
            step = releasephase.drive(self.world, record, release, app, now)
            key = releasephase.run_key(app, record.release)
            where = self.world.assignments.get(key)
            record = step.record or record
            if step.passed:
                took = now - record.phase_started
                await self._put_rollout(app, replace(record, status=ROLLING, released=True,
                                                     started=now))
                log.info("app %s: v%d release phase succeeded in %.1fs", app, record.release,
                         took)
                self.events.add(app, "rollout", f"v{record.release} release phase succeeded "
                                f"in {took:.1f}s; rollout started")
                self.poke()  # the app's instances go on the new release now
            elif step.failed is not None:
                await self._phase_failed(app, record, step.failed, now)
            elif step.record is not None:
                await self._put_rollout(app, step.record)
            if (step.passed or step.failed) and where is not None:  # once: it is written
                self._copy_output(app, key.id, where.agent)
            if step.changes:  # a run is dropped once its outcome is written, never before
                await self._write(step.changes)
            if step.started:
                log.info("app %s: v%d release phase runs on %s", app, record.release,
                         step.started)
                self.events.add(app, "rollout", f"v{record.release} release phase: "
                                f"{key.id} runs on {step.started}")

    def _copy_output(self, app: str, iid: str, agent: str) -> None:
        """The last lines a release phase wrote, from its agent into the app's events: in the
        background, outside the lock (they come over the network)."""
        if self.release_output is None:
            return
        task = asyncio.create_task(self.release_output(app, iid, agent))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _phase_failed(self, app: str, record: Rollout, why: str, now: float) -> None:
        """The release phase failed: nothing of the release was rolled out, and the release
        before it is current again (whatever auto_revert says: nothing runs it), its rollout
        going on where it was; on a first deploy the app runs nothing until the next."""
        apps = self.world.apps
        why = f"{rollouts.PHASE_UNPASSED}: {why}"
        failed = record.ended(FAILED, why, now)
        back = record.previous if record.previous in apps.releases.get(app, {}) else 0
        log.warning("app %s: v%d %s", app, record.release, why)
        if not back:
            await self._put_rollout(app, failed)
            self.events.add(app, "rollout", f"v{record.release} failed: {why}; nothing was "
                            "rolled out")
            return
        # `back` rolls on where it was; the release it replaces is the failed one (begin
        # would name the one before, as for a release whose phase never passed)
        await self._go_back(app, back, replace(rollouts.begin(failed, back, now),
                                               previous=record.release))
        self.events.add(app, "rollout", f"v{record.release} failed: {why}; nothing was rolled "
                        f"out, v{back} is current again")

    async def _drive_rollouts(self, now: float) -> None:
        for app, record, release in self._under_way(ROLLING):
            step = rollouts.drive(self.world, app, record, release, now)
            if step.changes:
                await self._write(step.changes)
            if step.failed is not None:
                await self._failed(app, step.record or record, step.failed, now)
            elif step.record is not None:
                await self._put_rollout(app, step.record)
                self._say_progress(app, record, step)
                if step.done:
                    took = now - record.started
                    log.info("app %s: v%d rolled out in %.1fs (surge %d)", app,
                             record.release, took, step.record.surge)
                    self.events.add(app, "rollout", f"v{record.release} rolled out in {took:.1f}s"
                                f" (surge {step.record.surge})")

    def _say_progress(self, app: str, before: Rollout, step: rollouts.Pass) -> None:
        """An event each time a type's updated instances pass a quarter of its count."""
        assert step.record is not None
        for ptype, progress in step.progress.items():
            total = progress.total
            was = sum(1 for i in before.updated if i.rpartition(".")[0] == ptype)
            now = sum(1 for i in step.record.updated if i.rpartition(".")[0] == ptype)
            if 0 < now < total and now * 4 // total > was * 4 // total:
                self.events.add(app, "rollout", f"v{before.release} {ptype} {now}/{total} "
                                "updated")

    async def _failed(self, app: str, record: Rollout, why: str, now: float) -> None:
        """The rollout failed: revert to the last release that rolled out fine, if its
        types say auto_revert and it is not itself a revert; else it stays, failed."""
        apps = self.world.apps
        release = apps.releases[app][record.release]
        back = record.good()
        back = back if back != record.release and back in apps.releases.get(app, {}) else 0
        auto = all(effective_deploy(t).auto_revert for t in release.types.values())
        if auto and back and not record.revert:
            await self._go_back(app, back, rollouts.begin(record.ended(REVERTED, why, now),
                                                          back, now, revert=True))
            log.warning("app %s: v%d rollout failed (%s); reverting to v%d", app,
                        record.release, why, back)
            self.events.add(app, "rollout", f"v{record.release} failed: {why}; reverted to v{back}")
            return
        await self._put_rollout(app, record.ended(FAILED, why, now))
        note = (" (no earlier release rolled out fine to go back to)" if not back
                else " (auto_revert is off)" if not auto else " (a revert is not reverted)")
        log.warning("app %s: v%d rollout failed: %s%s", app, record.release, why, note)
        self.events.add(app, "rollout", f"v{record.release} failed: {why}{note}")
