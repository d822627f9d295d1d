"""The scheduler's world: apps (releases, current release, formation), assignments and the
agents' reports, with the queries that reconciliation and the read models ask of it.

Pure: no I/O, no clock, no asyncio. The reconciler changes it only through the methods here,
and each change names the instances whose rows it touched (see readmodels.py).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from common.appdef import Release
from common.names import RELEASE_TYPE
from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler.agents import AgentTable
from scheduler.placement import RELEASE_RUN, Assigned, InstanceKey
from scheduler.records import Rollout, ScaleRecord

CRASH_LOOP = 3  # restarts of a copy that is down again: crash-looping, not one unlucky crash


def runs_release(report: pb.InstanceStatus | None, release: int) -> bool:
    """THE rule for "this copy runs that release": its agent reports it running on it."""
    return report is not None and report.state == InstanceState.RUNNING \
        and report.release == release


@dataclass
class Apps:
    """Releases, the current one and the desired counts, per app."""
    releases: dict[str, dict[int, Release]] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    formation: dict[tuple[str, str], int] = field(default_factory=dict)
    scales: dict[str, list[ScaleRecord]] = field(default_factory=dict)  # oldest first
    rollouts: dict[str, Rollout] = field(default_factory=dict)  # each app's last one

    def current_release(self, app: str) -> Release | None:
        version = self.current.get(app)
        return None if version is None else self.releases.get(app, {}).get(version)

    def serving(self) -> dict[str, int]:
        """The release each app's instances are placed on: its current one, unless that
        one's release phase has not passed (running, or failed on a first deploy): then the
        one before it, or none (scheduler/releasephase.py)."""
        out = dict(self.current)
        for app, record in self.rollouts.items():
            if not record.released and out.get(app) == record.release:
                if record.previous and record.previous in self.releases.get(app, {}):
                    out[app] = record.previous
                else:
                    del out[app]
        return out

    def desired(self, serving: Mapping[str, int] | None = None) -> dict[tuple[str, str], int]:
        """Counts for the types of each app's serving release (others count as zero)."""
        serving = self.serving() if serving is None else serving
        out = {}
        for (app, ptype), n in self.formation.items():
            release = self.releases.get(app, {}).get(serving.get(app, -1))
            # (a type named `release`, stored before the release phase was, runs no more)
            if release is not None and ptype in release.types and ptype != RELEASE_TYPE:
                out[(app, ptype)] = n
        return out

    def at_most_once(self, serving: Mapping[str, int] | None = None
                     ) -> set[tuple[str, str]]:
        serving = self.serving() if serving is None else serving
        out = set()
        for app, version in serving.items():
            release = self.releases.get(app, {}).get(version)
            if release is not None:
                out |= {(app, t) for t, pt in release.types.items() if pt.at_most_once}
        return out

    def counts(self, app: str) -> dict[str, int]:
        """The app's desired count of each type of its current release."""
        release = self.current_release(app)
        types = release.types if release is not None else {}
        return {t: self.formation.get((app, t), 0) for t in sorted(types)}


class World:
    """Apps, assignments (with an index by agent) and pending instances, plus the agent table;
    the reconciler's only state."""

    def __init__(self, agents: AgentTable) -> None:
        self.apps = Apps()
        self.agents = agents
        self.assignments: dict[InstanceKey, Assigned] = {}
        self.revisions: dict[InstanceKey, int] = {}  # etcd mod_revision of each assignment
        self.hosted: dict[str, set[InstanceKey]] = defaultdict(set)  # agent -> its list
        self.release_runs: set[InstanceKey] = set()  # `release.N` keys (releasephase.py)
        # Release runs pushed to an agent (or assigned before this scheduler started): one
        # that a later session of its agent does not report is never sent again (push.py).
        self.delivered: set[InstanceKey] = set()
        self.pending: set[InstanceKey] = set()  # wanted, fit nowhere

    # ---- changes ------------------------------------------------------------------

    def set_assignments(self, table: Mapping[InstanceKey, Assigned],
                        revisions: Mapping[InstanceKey, int], recovered: bool = False) -> None:
        """Replace the whole table (recovery, or a re-read after a failed write). Release runs
        recovered from etcd may have been sent by the scheduler before: they count as sent."""
        self.assignments = dict(table)
        self.revisions = dict(revisions)
        self.hosted = defaultdict(set)
        self.release_runs = set()
        for key, where in self.assignments.items():
            self._host(key, where)
        self.delivered = set(self.release_runs) if recovered \
            else self.delivered & self.release_runs

    def assign(self, changes: Mapping[InstanceKey, Assigned | None],
               revisions: Mapping[InstanceKey, int]) -> None:
        """Apply written changes (None: removed) with the revisions etcd gave them."""
        for key, where in changes.items():
            old = self.assignments.pop(key, None)
            if old is not None:
                self._unhost(key, old)
            self.revisions.pop(key, None)
            if where is not None:
                self.assignments[key] = where
                self.revisions[key] = revisions[key]
                self._host(key, where)

    def set_pending(self, keys: Iterable[InstanceKey]) -> set[InstanceKey]:
        """Replace the pending set; returns the keys that joined or left it."""
        new = set(keys)
        changed = new ^ self.pending
        self.pending = new
        return changed

    def _host(self, key: InstanceKey, where: Assigned) -> None:
        self.hosted[where.agent].add(key)
        if where.previous:
            self.hosted[where.previous].add(key)
        if key.id.startswith(RELEASE_RUN):
            self.release_runs.add(key)

    def _unhost(self, key: InstanceKey, where: Assigned) -> None:
        for name in (where.agent, where.previous):
            if name:
                self.hosted[name].discard(key)
        self.release_runs.discard(key)
        self.delivered.discard(key)

    # ---- queries for placement ------------------------------------------------------

    def blocked(self, once: set[tuple[str, str]]) -> set[InstanceKey]:
        """at_most_once instances that a live agent other than their home still runs."""
        out = set()
        for name, entry in self.agents.entries.items():
            if entry.down:
                continue
            for key in entry.reports:
                if (key.app, key.type) in once and entry.runs(key):
                    where = self.assignments.get(key)
                    if where is None or where.agent != name:
                        out.add(key)
        return out

    def running_on(self, serving: Mapping[str, int]) -> dict[InstanceKey, str]:
        """Where connected agents report instances running on their app's serving release."""
        out: dict[InstanceKey, str] = {}
        for name, entry in sorted(self.agents.entries.items()):
            if entry.session is None or entry.down:
                continue
            for key in entry.reports:
                current = serving.get(key.app, -1)
                if runs_release(entry.report(key, current), current):
                    out.setdefault(key, name)
        return out

    def finished_handoffs(self, now: float, proof: Callable[[InstanceKey, int], float]
                          ) -> dict[InstanceKey, Assigned]:
        """Handoffs whose new copy runs (or whose old agent is gone): the old copy may stop.
        A new copy on another release than the old one (a rollout's surge) must have run for
        `proof(key, release)` seconds first (its type's min_healthy_time): one that has just
        turned healthy may crash yet."""
        done = {}
        for key, where in self.assignments.items():
            if not where.previous:
                continue
            old = self.agents.entries.get(where.previous)
            if old is None or old.down:
                done[key] = where.settled()
                continue
            entry = self.agents.entries.get(where.agent)
            since = entry.since(key, where.copy) if entry is not None and not entry.down \
                else None
            if since is not None and (where.old_copy == where.copy
                                      or now - since >= proof(key, where.release)):
                done[key] = where.settled()
        return done

    def runs_assigned(self, key: InstanceKey, where: Assigned) -> bool:
        """Does the live agent it is assigned to run it, on the release assigned?"""
        entry = self.agents.entries.get(where.agent)
        return entry is not None and not entry.down \
            and runs_release(entry.report(key, *where.copy), where.release)

    def crash_looping(self, app: str, ptype: str) -> bool:
        """Is every assigned instance of the type (one at least) down and restarted
        CRASH_LOOP times or more by its agent, on every agent that hosts one? Then it is the
        release, not one host, that is broken (`ctl formation`, `ctl releases`, a metric)."""
        current = self.apps.current.get(app)
        seen = False
        for key, where in self.assignments.items():
            if key.app != app or key.type != ptype:
                continue
            entry = self.agents.entries.get(where.agent)
            if entry is None or entry.down:
                continue
            report = entry.report(key, *where.copy)
            if where.release != current or report is None \
                    or report.state == InstanceState.RUNNING or report.restarts < CRASH_LOOP:
                return False
            seen = True
        return seen

    # ---- queries for agents and read models -------------------------------------------

    def list_for(self, agent: str) -> list[tuple[InstanceKey, int, int]]:
        """The agent's list, (instance, release, generation): what is assigned to it, and old
        copies it keeps in handoffs (an instance in a surge on this agent is on it twice)."""
        out = []
        for key in sorted(self.hosted.get(agent, ())):
            where = self.assignments[key]
            if where.previous == agent and where.old_copy != where.copy:
                out.append((key, *where.old_copy))
            if where.agent == agent or where.old_copy == where.copy:
                out.append((key, *where.copy))
        return out

    def instance(self, key: InstanceKey) -> pb.Instance | None:
        """The row `ctl ps` shows for key, or None if the world no longer knows it."""
        where = self.assignments.get(key)
        inst = pb.Instance(id=key.id, app=key.app, type=key.type)
        if where is None:
            if key in self.pending:
                inst.state = InstanceState.PENDING
                inst.release = self.apps.current.get(key.app, 0)
                inst.reason = "no ready agent with a free slot"
                return inst
            for name, entry in sorted(self.agents.entries.items()):
                report = entry.report(key)
                if report is not None:  # an agent still stops it after a scale-down
                    _copy_report(inst, report)
                    inst.agent, inst.release = name, report.release
                    inst.reason = "no longer assigned"
                    return inst
            return None
        inst.agent, inst.release = where.agent, where.release
        host = self.agents.entries.get(where.agent)
        report = host.report(key, *where.copy) if host else None
        if host is not None and host.down:
            inst.state, inst.reason = InstanceState.LOST, f"agent {where.agent} is down"
        elif report is None or report.release != where.release:
            inst.state = InstanceState.STARTING
            inst.reason = "assigned, not yet reported by its agent"
        else:
            _copy_report(inst, report)
        return inst



def _copy_report(inst: pb.Instance, report: pb.InstanceStatus) -> None:
    inst.state, inst.pid, inst.port = report.state, report.pid, report.port
    inst.restarts, inst.reason = report.restarts, report.reason
