"""Driving rollouts: one pass of an app's rollout over the world (docs/releases.md). Pure: no
I/O; the reconciler writes what a pass returns, then calls it again on the next pass.

The planner (scheduler/rollout.py) decides per process type from a view of each instance id:
its copy on the old release and its copy on the new one. This module builds that view from
the assignment table and the agents' reports, and turns the planner's steps into assignment
changes:

    start_new  an id with a serving old copy  -> a surge: Assigned(A, new, previous=A, old)
                                                 (its agent runs both copies)
               an id with no copy to keep     -> Assigned(A, new)
    stop_old   an id in a surge               -> Assigned(A, new): the old copy stops
               an id with only an old copy    -> Assigned(A, new): its agent stops the old
                                                 copy first, then starts the new one

Ids that are unassigned, or on an agent that is down or draining, are placement's: it puts
them on the new release directly (the current one). A proven surge is also ended by
World.finished_handoffs, which runs first in every pass: the same change, made once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from common.appdef import ProcessType, Release, effective_deploy
from common.states import InstanceState
from scheduler import rollout as planner
from scheduler.agents import AgentEntry, Copy
from scheduler.placement import Assigned, InstanceKey
from scheduler.records import (
    ACTIVE,
    FAILED,
    FINISHED,
    RELEASING,
    REVERTED,
    ROLLING,
    SUPERSEDED,
    Rollout,
)
from scheduler.world import World

_STATE = {
    InstanceState.PENDING: planner.State.STARTING,
    InstanceState.STARTING: planner.State.STARTING,
    InstanceState.RUNNING: planner.State.HEALTHY,
    InstanceState.UNHEALTHY: planner.State.UNHEALTHY,
    InstanceState.CRASHED: planner.State.CRASHED,
    InstanceState.STOPPING: planner.State.STOPPING,
}


@dataclass
class Pass:
    """What one pass over an app's rollout asks for."""
    changes: dict[InstanceKey, Assigned] = field(default_factory=dict)
    record: Rollout | None = None  # the rollout's record, changed (None: unchanged)
    failed: str | None = None      # it failed now, one line
    done: bool = False             # it finished now
    progress: dict[str, planner.Progress] = field(default_factory=dict)  # by type


def settings(ptype: ProcessType, desired: int) -> planner.Settings:
    """A type's rollout settings for a desired count."""
    d = effective_deploy(ptype)
    assert d.max_surge is not None and d.max_unavailable is not None
    assert d.min_healthy_time is not None and d.healthy_deadline is not None
    return planner.settings_for(desired, d.max_surge, d.max_unavailable, d.min_healthy_time,
                                d.healthy_deadline, ptype.at_most_once)


def _copy(entry: AgentEntry | None, key: InstanceKey, copy: Copy) -> planner.Copy | None:
    """The planner's view of key's copy `copy` as entry's agent reports it."""
    report = entry.report(key, *copy) if entry is not None else None
    if entry is None or report is None:
        return None
    state = _STATE.get(InstanceState(report.state), planner.State.STOPPED)
    return planner.Copy(state, entry.running_since.get((key, copy), 0.0)
                        if state is planner.State.HEALTHY else 0.0)


def _failures(entry: AgentEntry | None, key: InstanceKey, copy: Copy) -> tuple[int, int]:
    """(crashes, failed checks) of key's copy `copy`: its restarts, and 1 while it is
    unhealthy (it is restarted after its check's failures in a row: a crash)."""
    report = entry.report(key, *copy) if entry is not None else None
    if report is None:
        return 0, 0
    return report.restarts, int(report.state == InstanceState.UNHEALTHY)


def is_new(copy: Copy, target: Copy) -> bool:
    """Is this copy what the rollout moves to? Its release, restarted at least as often (an
    instance restarted on its own since counts)."""
    return copy[0] == target[0] and copy[1] >= target[1]


def slot(world: World, key: InstanceKey, where: Assigned, target: Copy,
         record: Rollout) -> planner.Slot:
    """The planner's view of one id: its old copy and its copy on `target`."""
    entries = world.agents.entries
    home = entries.get(where.agent)
    old: planner.Copy | None
    if is_new(where.copy, target):
        new = _copy(home, key, where.copy)
        if where.previous and where.old_copy != where.copy:
            old = _copy(entries.get(where.previous), key, where.old_copy)
        else:  # another copy still stopping here (a stop-first step)
            others = [c for c in (home.reports.get(key, {}) if home else {})
                      if c != where.copy]
            old = _copy(home, key, max(others)) if others else None
        if new is None and old is None:
            new = planner.Copy(planner.State.STARTING)  # assigned, not yet reported
    else:
        new = None
        old = _copy(home, key, where.copy) or planner.Copy(planner.State.STARTING)
    crashes, checks = _failures(home, key, where.copy) if new is not None else (0, 0)
    return planner.Slot(old, new, record.started_ids.get(key.id), crashes, checks,
                        key.id in record.updated)


def _movable(world: World, key: InstanceKey | None) -> Assigned | None:
    """key's assignment if the rollout may change it: on a connected, ready agent."""
    where = world.assignments.get(key) if key is not None else None
    if where is None:
        return None
    entry = world.agents.entries.get(where.agent)
    ok = entry is not None and not entry.down and not entry.draining \
        and entry.session is not None
    return where if ok else None


def drive(world: World, app: str, record: Rollout, release: Release, now: float) -> Pass:
    """One pass of app's rollout to `release` (record.release): what to change now."""
    out = Pass()
    started = dict(record.started_ids)
    updated = list(record.updated)
    surge = record.surge
    keys_of: dict[str, list[InstanceKey]] = {}
    for key in world.assignments:
        if key.app == app:
            keys_of.setdefault(key.type, []).append(key)
    done = True
    for ptype, spec in sorted(release.types.items()):
        desired = world.apps.formation.get((app, ptype), 0)
        rules = settings(spec, desired)
        keys = {k.id: k for k in keys_of.get(ptype, [])}
        target = (record.release, record.generations.get(ptype, 0))
        slots = {i: slot(world, k, world.assignments[k], target, record)
                 for i, k in keys.items()}
        step = planner.next_step(ptype, desired, slots, rules, now)
        out.progress[ptype] = step.progress
        copies = sum((s.old is not None and s.old.state is not planner.State.STOPPED)
                     + (s.new is not None and s.new.state is not planner.State.STOPPED)
                     for s in slots.values())
        surge = max(surge, copies - desired)
        if step.failed is not None:
            out.failed = step.failed
            break
        for i in step.proven:
            started.pop(i, None)
            if i not in updated:
                updated.append(i)
        done = done and step.done

        for i in step.start_new:
            where = _movable(world, keys.get(i))
            if where is None or is_new(where.copy, target):
                continue  # placement's, or already on it
            old = slots[i].old
            keep = old is not None and old.state is planner.State.HEALTHY
            out.changes[keys[i]] = Assigned(where.agent, record.release,
                                            where.agent if keep else "",
                                            where.release if keep else 0, target[1],
                                            where.generation if keep else 0)
            started[i] = now
        for i in step.stop_old:
            where = _movable(world, keys.get(i))
            if where is None:
                continue
            if is_new(where.copy, target):
                out.changes[keys[i]] = where.settled()
            else:  # stop first: its new copy starts once the old one is gone
                out.changes[keys[i]] = Assigned(where.agent, target[0], generation=target[1])
                started[i] = now
    if out.failed is None and done:
        out.done = True
    new = replace(record, started_ids=started, updated=updated, surge=surge)
    if out.done:
        new = replace(new, status=FINISHED, finished=now, started_ids={},
                      outcomes={**new.outcomes, record.release: FINISHED})
    if new != record:
        out.record = new
    return out


UNFIT = (FAILED, REVERTED, SUPERSEDED)  # outcomes `ctl rollback` does not pick by itself
PHASE_UNPASSED = "release phase"  # how a release's reason starts if its phase never passed
PHASE_STARTING = "release phase starting"
PHASE_RUNNING = "release phase running"
# Not yet assigned: no ready agent has a free slot, or an earlier run still stops (Control
# says so, from the assignments).
PHASE_WAITING = ("release phase waiting for a ready agent with a free slot (or for an "
                 "earlier release phase to stop)")


def phase_unpassed(record: Rollout | None, version: int) -> str:
    """Why release `version`'s release phase never passed ("" if it did, or none ran): its
    failure, or a newer release that superseded it while it ran."""
    reason = record.reasons.get(version, "") if record is not None else ""
    return reason if reason.startswith(PHASE_UNPASSED) else ""


def begin(old: Rollout | None, release: int, now: float, revert: bool = False,
          phase: bool = False) -> Rollout:
    """A new rollout to `release`, replacing (superseding) whatever `old` was doing; its
    release phase first if `phase` (scheduler/releasephase.py)."""
    previous = old.release if old is not None else 0
    if old is not None and old.status in ACTIVE:
        old = replace(old, outcomes={**old.outcomes, old.release: SUPERSEDED})
    if old is not None and old.status == RELEASING:  # its migration may not have run
        old = replace(old, reasons={**old.reasons, old.release: f"{PHASE_UNPASSED}: "
                                    f"superseded by v{release} before it passed"})
    if old is not None and not old.released:
        previous = old.previous  # its release phase never passed: nothing ran it
    return Rollout(release, previous, RELEASING if phase else ROLLING, started=now,
                   revert=revert, outcomes=dict(old.outcomes) if old is not None else {},
                   reasons=dict(old.reasons) if old is not None else {}, released=not phase)


def restart(world: World, app: str, old: Rollout, types: list[str], now: float) -> Rollout:
    """A rollout of the current release onto itself for `types` (`ctl restart TYPE`): each
    of their instances gets a new copy, one generation above any it has."""
    generations = dict(old.generations)
    for ptype in types:
        top = max((w.generation for k, w in world.assignments.items()
                   if k.app == app and k.type == ptype and w.release == old.release),
                  default=0)
        generations[ptype] = max(generations.get(ptype, 0), top) + 1
    return Rollout(old.release, old.release, ROLLING, started=now, outcomes=dict(old.outcomes),
                   reasons=dict(old.reasons), generations=generations)


def settle_doubles(world: World, app: str, target: int) -> dict[InstanceKey, Assigned]:
    """A rollout superseded mid-way leaves ids with two copies (old, and the superseded new
    one); the new rollout's view has room for one old copy per id. Keep the one that serves
    (the newer if both do, the older if neither: it was serving before)."""
    out: dict[InstanceKey, Assigned] = {}
    for key, where in world.assignments.items():
        if key.app != app or not where.previous or where.old_release == where.release \
                or where.release == target:
            continue
        home = world.agents.entries.get(where.agent)
        report = home.report(key, where.release) if home is not None else None
        if report is not None and report.state == InstanceState.RUNNING:
            out[key] = where.settled()
        else:
            out[key] = Assigned(where.previous, where.old_release)
    return out


def release_status(record: Rollout | None, current: int, version: int) -> tuple[str, str]:
    """(`ctl releases`' status of release `version`, why it failed)."""
    outcome = record.outcomes.get(version, "") if record is not None else ""
    if version == current:
        if record is not None and record.release == version:
            if record.status == RELEASING:  # running once its agent said so
                return "rolling out", PHASE_RUNNING if record.phase_seen else PHASE_STARTING
            if record.status in ACTIVE:
                return "rolling out", ""
            if record.status == FAILED:
                return "failed", record.reasons.get(version, "")
        return "current", ""
    if outcome in (FAILED, REVERTED):
        return outcome, record.reasons.get(version, "") if record is not None else ""
    return "superseded", ""
