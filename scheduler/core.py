"""The scheduler's reconcile loop: evaluate (pure placement) -> apply (etcd) -> push (agents).

One asyncio task owns reconciliation; everything else (ctl calls, agent messages, the etcd watch,
the heartbeat clock) only changes inputs and pokes `wake`. A lost or repeated poke does no harm.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from proto import formation_pb2 as pb
from common.states import InstanceState
from scheduler import metrics
from scheduler.agents import AgentEntry, AgentTable, Session
from common.appdef import Release
from common.appdef_pb import health_to_pb
from scheduler.placement import Assigned, InstanceKey, Plan, plan
from scheduler.store import AgentRecord, Store, StoreUnavailable

log = logging.getLogger("scheduler")


@dataclass
class Settings:
    agent_ttl: float = 10.0
    fence_after: float = 0.0  # 0: derived, 60 % of agent_ttl


class Scheduler:
    """The scheduler's state and its reconcile loop."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.agents = AgentTable(settings.agent_ttl)
        self.releases: dict[str, dict[int, Release]] = {}
        self.current: dict[str, int] = {}
        self.formation: dict[tuple[str, str], int] = {}
        self.assignments: dict[InstanceKey, Assigned] = {}
        self.pending: list[InstanceKey] = []
        self.lock = asyncio.Lock()  # serializes writes of formation/releases with reconcile
        self.wake = asyncio.Event()
        self.apps_dirty = False
        self.assignments_dirty = False
        self.started = time.time()

    # ---- start-up -------------------------------------------------------------

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
        self.releases, self.current, self.formation = snap.releases, snap.current, snap.formation
        self.assignments = snap.assignments
        self.agents.restore(snap.agents)
        log.info("recovered from etcd at revision %d: %d apps, %d agents, %d assignments",
                 snap.revision, len(self.current), len(snap.agents), len(snap.assignments))
        return snap.revision

    async def reload_assignments(self) -> None:
        """After a failed write some batches may have landed: etcd, not memory, is the truth."""
        snap = await self.store.load("assignments")
        async with self.lock:
            self.assignments = snap.assignments
            self.assignments_dirty = False

    async def reload_apps(self) -> None:
        snap = await self.store.load("apps")
        async with self.lock:
            self.releases, self.current = snap.releases, snap.current
            self.formation = snap.formation

    # ---- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile whenever poked, and mark agents down when their deadline passes."""
        while True:
            deadline = self.agents.next_deadline()
            timeout = None if deadline is None or deadline == float("inf") \
                else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            for name in self.agents.expire():
                log.warning("agent %s is down: no heartbeat for %.1fs", name, self.agents.ttl)
            try:
                if self.apps_dirty:
                    self.apps_dirty = False
                    await self.reload_apps()
                if self.assignments_dirty:
                    await self.reload_assignments()
                await self.reconcile()
            except StoreUnavailable as e:
                log.warning("reconcile deferred: %s", e)
                await asyncio.sleep(0.5)
                self.wake.set()

    def poke(self) -> None:
        self.wake.set()

    def desired(self) -> dict[tuple[str, str], int]:
        """Counts for the types of each app's current release (others count as zero)."""
        out = {}
        for (app, ptype), n in self.formation.items():
            release = self.current_release(app)
            if release is not None and ptype in release.types:
                out[(app, ptype)] = n
        return out

    def current_release(self, app: str) -> Release | None:
        version = self.current.get(app)
        return None if version is None else self.releases.get(app, {}).get(version)

    def at_most_once(self) -> set[tuple[str, str]]:
        out = set()
        for app in self.current:
            release = self.current_release(app)
            if release is not None:
                out |= {(app, t) for t, pt in release.types.items() if pt.at_most_once}
        return out

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

    def running_on(self) -> dict[InstanceKey, str]:
        """Where connected agents report instances running on the current release."""
        out = {}
        for name, entry in sorted(self.agents.entries.items()):
            if entry.session is None or entry.down:
                continue
            for key, report in entry.reports.items():
                if report.state == InstanceState.RUNNING and report.release == self.current.get(key.app):
                    out.setdefault(key, name)
        return out

    def finished_handoffs(self) -> dict[InstanceKey, Assigned]:
        """Handoffs whose new copy runs (or whose old agent is gone): the old copy may stop."""
        done = {}
        for key, where in self.assignments.items():
            if not where.previous:
                continue
            new = self.agents.entries.get(where.agent)
            old = self.agents.entries.get(where.previous)
            report = new.reports.get(key) if new else None
            if old is None or old.down or (report is not None and report.state == InstanceState.RUNNING
                                           and report.release == where.release):
                done[key] = Assigned(where.agent, where.release)
        return done

    async def reconcile(self) -> Plan:
        started = time.monotonic()
        async with self.lock:
            handed = self.finished_handoffs()
            if handed:
                self.assignments_dirty = True
                await self.store.write(self.store.assignment_puts(handed))
                self.assignments_dirty = False
                self.assignments.update(handed)
            once = self.at_most_once()
            result = plan(self.desired(), self.current, self.agents.views(), self.assignments,
                          once, self.blocked(once), self.running_on())
            if not result.empty():
                after = result.assignments_after(self.assignments, self.current)
                changed = {k: after[k] for k in (*result.place, *result.migrate, *result.update)}
                self.assignments_dirty = True  # until the write is known to be whole
                await self.store.write(self.store.assignment_puts(changed),
                                       self.store.assignment_keys(result.stop + result.unassign))
                self.assignments_dirty = False
                self.assignments = after
                metrics.PLACEMENTS.inc(len(result.place) + len(result.migrate))
                metrics.STOPS.inc(len(result.stop))
                if result.place or result.migrate or result.stop:
                    log.info("plan: %d placed, %d migrated, %d updated, %d stopped, %d pending",
                             len(result.place), len(result.migrate), len(result.update),
                             len(result.stop), len(result.pending))
            self.pending = result.pending
            self.push_all()
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        return result

    # ---- pushing assignments -----------------------------------------------------

    def lists_by_agent(self) -> dict[str, list[InstanceKey]]:
        """Each agent's list: what is assigned to it, and old copies it keeps during handoffs."""
        by_agent: dict[str, list[InstanceKey]] = defaultdict(list)
        for key, where in sorted(self.assignments.items()):
            by_agent[where.agent].append(key)
            if where.previous:
                by_agent[where.previous].append(key)
        return by_agent

    def push_all(self) -> None:
        by_agent = self.lists_by_agent()
        for name, entry in self.agents.entries.items():
            if entry.session is not None:
                self.push(entry, by_agent.get(name, []))

    def push(self, entry: AgentEntry, keys: list[InstanceKey], force: bool = False) -> None:
        """Send the agent its whole list if it differs from the last one sent on this stream."""
        session = entry.session
        assert session is not None
        fingerprint = tuple((k, self.assignments[k].release) for k in keys)
        if not force and session.last_sent == fingerprint:
            return  # checked before building messages: this runs for every agent, every pass
        session.last_sent = fingerprint
        items = [self.assignment_message(k) for k in keys]
        fence = self.settings.fence_after or 0.6 * self.settings.agent_ttl
        session.outbox.put_nowait(pb.SchedulerMessage(assignments=pb.Assignments(
            items=items, fence_after=fence,
            agent_ttl=self.settings.agent_ttl)))

    def assignment_message(self, key: InstanceKey) -> pb.Assignment:
        version = self.assignments[key].release
        release = self.releases[key.app][version]
        ptype = release.types[key.type]
        return pb.Assignment(
            app=key.app, id=key.id, type=key.type, release=version, command=ptype.command,
            env=release.env, stop_timeout=ptype.stop_timeout, at_most_once=ptype.at_most_once,
            health=health_to_pb(ptype.health))

    # ---- agent events --------------------------------------------------------------

    async def agent_hello(self, hello: pb.Hello) -> tuple[AgentEntry, Session]:
        """Register (or re-register) an agent; returns its entry and new session."""
        record = AgentRecord(hello.name, hello.address, hello.capacity,
                             metrics_address=hello.metrics_address,
                             api_address=hello.api_address)
        async with self.lock:
            entry = self.agents.entries.get(hello.name)
            if entry is not None:
                record.state = entry.record.state
            if entry is None or entry.record != record:
                await self.store.put_agent(record)
            if entry is None:
                entry = self.agents.entries[hello.name] = AgentEntry(record, deadline=0)
            entry.record = record
            if entry.session is not None:  # a newer stream replaces an older one
                entry.session.outbox.put_nowait(None)
            entry.session = Session()
            entry.down = False
            self.agents.seen(hello.name)
            entry.reports = {InstanceKey(s.app, s.id): s for s in hello.instances}
            log.info("agent %s connected from %s (capacity %d, running %d)", hello.name,
                     hello.address, hello.capacity, len(hello.instances))
            self.push(entry, self.lists_by_agent().get(hello.name, []), force=True)
        self.poke()
        return entry, entry.session

    def agent_heartbeat(self, name: str, beat: pb.Heartbeat) -> None:
        entry = self.agents.seen(name)
        if entry.down:  # came back before its stream did: count it alive again
            entry.down = False
            self.poke()

    def agent_status(self, name: str, status: pb.InstanceStatus) -> None:
        entry = self.agents.seen(name)
        key = InstanceKey(status.app, status.id)
        if status.state == InstanceState.STOPPED:
            entry.reports.pop(key, None)
        else:
            entry.reports[key] = status
        where = self.assignments.get(key)
        # A handoff may finish, or an at_most_once instance may now be placed elsewhere.
        if (where is not None and where.previous and status.state == InstanceState.RUNNING) or \
                (status.state == InstanceState.STOPPED and (where is None or where.agent != name)):
            self.poke()

    def agent_gone(self, entry: AgentEntry, session: Session) -> None:
        """The stream ended; the agent stays alive until its heartbeat deadline passes."""
        if entry.session is session:
            entry.session = None
            log.info("agent %s disconnected", entry.record.name)
            self.poke()

    # ---- views for Control ------------------------------------------------------------

    def instance_view(self, key: InstanceKey) -> pb.Instance:
        where = self.assignments.get(key)
        inst = pb.Instance(id=key.id, app=key.app, type=key.type)
        if where is None:
            inst.state = InstanceState.PENDING
            inst.release = self.current.get(key.app, 0)
            inst.reason = "no ready agent with a free slot"
            return inst
        inst.agent, inst.release = where.agent, where.release
        entry = self.agents.entries.get(where.agent)
        report = entry.reports.get(key) if entry else None
        if entry is not None and entry.down:
            inst.state, inst.reason = InstanceState.LOST, f"agent {where.agent} is down"
        elif report is None or report.release != where.release:
            inst.state, inst.reason = InstanceState.STARTING, "assigned, not yet reported by its agent"
        else:
            inst.state, inst.pid, inst.port = report.state, report.pid, report.port
            inst.restarts, inst.reason = report.restarts, report.reason
        return inst

    def instances(self, app: str = "") -> list[pb.Instance]:
        """Assigned and pending instances, and those an agent still stops after scale-down."""
        keys = [k for k in self.assignments if not app or k.app == app]
        keys += [k for k in self.pending if not app or k.app == app]
        rows = {k: self.instance_view(k) for k in keys}
        for name, entry in self.agents.entries.items():
            for key, report in entry.reports.items():
                if key not in rows and (not app or key.app == app):
                    rows[key] = pb.Instance(id=key.id, app=key.app, type=key.type, agent=name,
                                            state=report.state, pid=report.pid,
                                            port=report.port, restarts=report.restarts,
                                            release=report.release, reason="no longer assigned")
        return [rows[k] for k in sorted(rows, key=_instance_order)]

    def running_counts(self) -> Counter[tuple[str, str]]:
        """(app, type) -> instances reported running, on their release, by the live agent they
        are assigned to (what instance_view calls running), in one pass."""
        counts: Counter[tuple[str, str]] = Counter()
        for key, where in self.assignments.items():
            entry = self.agents.entries.get(where.agent)
            report = entry.reports.get(key) if entry is not None and not entry.down else None
            if report is not None and report.release == where.release \
                    and report.state == InstanceState.RUNNING:
                counts[(key.app, key.type)] += 1
        return counts


def _instance_order(key: InstanceKey) -> tuple[str, str, int]:
    return key.app, key.type, key.number
