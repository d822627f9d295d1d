"""The release phase (docs/releases.md): the Procfile's `release:` command, run once per new
release on one agent, with the release's env, before its rollout. Pure: no I/O; the
reconciler writes what a pass returns (rolloutsteps.py).

The run of release vN is the one-shot instance `release.N` (Assignment.oneshot), assigned to
a ready agent with a free slot. While it runs the rollout's status is "releasing" and the app
keeps its instances on the release before (Apps.serving). Its agent reports it SUCCEEDED:
the rollout starts; FAILED (a non-zero exit, or its timeout), its agent lost, or back (a new
session) without it, or no word from the agent long past its timeout: the release failed and
nothing of it is rolled out. It never runs twice: a run sent to an agent once is never sent
again to a session of it that does not run it (push.py), it fails instead.

A new release supersedes one whose phase runs: that run is stopped, and the new one starts
once no agent reports it any longer (two migrations never run at once).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from common.appdef import DEFAULT_STOP_TIMEOUT, Release
from common.names import RELEASE_TYPE, instance_id
from common.states import InstanceState
from scheduler.placement import RELEASE_RUN, Assigned, InstanceKey
from scheduler.records import RELEASING, Rollout
from scheduler.world import World

# Seconds past a run's timeout and stop_timeout the scheduler waits for its outcome before
# it calls the run lost: its agent enforces the timeout, this is for an agent that never says.
OUTCOME_SLACK = 30.0


@dataclass
class Phase:
    """What one pass over an app's release phase asks for."""
    changes: dict[InstanceKey, Assigned | None] = field(default_factory=dict)
    record: Rollout | None = None  # the rollout's record, changed (None: unchanged)
    passed: bool = False           # it exited 0 now: the rollout may start
    failed: str | None = None      # it failed now, one line
    started: str = ""              # it was assigned to this agent now


def run_key(app: str, version: int) -> InstanceKey:
    """The instance that runs release `version`'s phase: `release.N`."""
    return InstanceKey(app, instance_id(RELEASE_TYPE, version))


def deadline(record: Rollout, release: Release) -> float:
    """When a run assigned at record.phase_started counts as lost with no outcome."""
    return record.phase_started + release.release_timeout + DEFAULT_STOP_TIMEOUT + OUTCOME_SLACK


def strays(world: World) -> dict[InstanceKey, None]:
    """Runs no rollout waits on (superseded, left by a scheduler that stopped between writing
    an outcome and dropping its run, or an instance of a type named `release` from before
    the release phase): removed, so their agents stop them."""
    out: dict[InstanceKey, None] = {}
    for key in world.release_runs:
        record = world.apps.rollouts.get(key.app)
        if record is None or record.status != RELEASING \
                or key != run_key(key.app, record.release) \
                or world.assignments[key].release != record.release:
            out[key] = None
    return out


def _busy(world: World, key: InstanceKey) -> bool:
    """May another release phase run of the app still run? One is, if a live agent reports
    it or was sent it (and has not said it stopped); and any agent that is not down but not
    connected either (after a scheduler restart, before its hello) may run one."""
    for entry in world.agents.entries.values():
        if entry.down:
            continue
        if entry.session is None:
            return True
        for other in (*entry.reports, *entry.session.given):
            if other.app == key.app and other.id.startswith(RELEASE_RUN) and other != key:
                return True
    return False


def _agent_for(world: World) -> str | None:
    """A ready agent with a free slot, the least loaded first (then by name)."""
    free = [(len(world.hosted.get(name, ())), name)
            for name, entry in world.agents.entries.items()
            if entry.view().schedulable and len(world.hosted.get(name, ())) < entry.record.capacity]
    return min(free)[1] if free else None


def drive(world: World, record: Rollout, release: Release, app: str, now: float) -> Phase:
    """One pass of the release phase of record.release (status RELEASING)."""
    key = run_key(app, record.release)
    where = world.assignments.get(key)
    if where is not None and where.release != record.release:
        return Phase()  # an instance of an old type named `release`: strays() removes it
    if where is None:
        # Never assigned, or its write failed (phase_started is written first): it was never
        # sent, for a run leaves etcd only after its outcome is written or it is superseded.
        if _busy(world, key):
            return Phase()  # the superseded run still stops
        agent = _agent_for(world)
        if agent is None:
            return Phase()  # like a pending instance: waits for room
        return Phase(changes={key: Assigned(agent, record.release)},
                     record=replace(record, phase_started=now), started=agent)
    drop: dict[InstanceKey, Assigned | None] = {key: None}
    entry = world.agents.entries.get(where.agent)
    if entry is None or entry.down:
        return Phase(drop, failed=f"agent {where.agent} was lost while it ran")
    report = entry.report(key, *where.copy)
    if report is None:
        session = entry.session
        if session is not None and key in world.delivered and key not in session.given:
            # Sent to it before, and it came back without it (push.py withholds it now).
            return Phase(drop, failed=f"agent {where.agent} came back without it (restarted "
                                      "while it ran?); it is not run again")
        if now > deadline(record, release):
            return Phase(drop, failed=f"no outcome from agent {where.agent} "
                                      f"{now - record.phase_started:.0f}s after it was assigned")
        return Phase()
    seen = None if record.phase_seen else replace(record, phase_seen=True)
    if report.state == InstanceState.SUCCEEDED:
        return Phase(drop, seen, passed=True)
    if report.state == InstanceState.FAILED:
        return Phase(drop, seen, failed=report.reason or "it failed")
    if now > deadline(record, release):
        return Phase(drop, seen, failed=f"still running on {where.agent} "
                                        f"{now - record.phase_started:.0f}s after it was "
                                        "assigned, past its timeout")
    return Phase(record=seen)
