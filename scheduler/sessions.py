"""What the scheduler does for agents: their session events (hello, heartbeat, status, gone),
drain, forgetting a down agent, and marking agents down when their heartbeats stop. A part of
the Scheduler (reconciler.py), kept apart so each file says one thing."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

import grpc

from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler import instruments
from scheduler.agents import AgentEntry, AgentTable, Session
from scheduler.endpoints import Endpoints
from scheduler.errors import Rejected
from scheduler.eventlog import EventLog, listed
from scheduler.leadership import NotLeader
from scheduler.placement import InstanceKey
from scheduler.push import LinkTimes, push
from scheduler.readmodels import ReadModels
from scheduler.records import ACTIVE, AgentRecord
from scheduler.store import Store
from scheduler.world import World

log = logging.getLogger("scheduler")


class AgentEvents:
    """The agents' side of the Scheduler; it provides these attributes."""

    store: Store
    times: LinkTimes
    world: World
    read: ReadModels
    events: EventLog
    lock: asyncio.Lock
    poke: Callable[[], None]
    endpoints: Endpoints
    term_over: bool

    @property
    def agents(self) -> AgentTable:
        return self.world.agents

    def expire_agents(self) -> None:
        """Agents whose heartbeat deadline passed are down: their rows say lost."""
        for entry, reported in self.agents.expire():
            log.warning("agent %s is down: no heartbeat for %.1fs", entry.record.name,
                        self.agents.ttl)
            self.read.touch_agent(entry.record.name, reported)
            self.agent_event(entry.record.name, f"down: no heartbeat for {self.agents.ttl:g}s",
                             reported)

    async def drain(self, name: str, undo: bool) -> pb.Agent:
        async with self.lock:
            if name not in self.agents.entries:
                raise Rejected(f"no agent named {name!r}", grpc.StatusCode.NOT_FOUND)
            record = self.agents.set_draining(name, not undo)
            await self.store.put_agent(record)
            self.agents.entries[name].record = record
        self.poke()
        return self.read.agent(name)

    async def remove_agent(self, name: str, why: str = "asked to") -> None:
        """Forget a down agent: its record goes from etcd and `ctl agents`."""
        async with self.lock:
            entry = self.agents.entries.get(name)
            if entry is None:
                raise Rejected(f"no agent named {name!r}", grpc.StatusCode.NOT_FOUND)
            if not entry.down:
                raise Rejected(f"agent {name!r} is not down: stop it first (drain it to move "
                               f"its instances)", grpc.StatusCode.FAILED_PRECONDITION)
            await self.store.delete_agent(name)
            self.agents.forget(name)
            self.read.touch(self.world.hosted.get(name, ()))
        log.info("agent %s forgotten (%s)", name, why)
        self.poke()

    # ---- agent session events ----------------------------------------------------------

    async def agent_hello(self, hello: pb.Hello) -> tuple[AgentEntry, Session]:
        """Register (or re-register) an agent; returns its entry and new session."""
        record = AgentRecord(hello.name, hello.address, hello.capacity,
                             metrics_address=hello.metrics_address,
                             api_address=hello.api_address, isolation=hello.isolation)
        async with self.lock:
            known = self.agents.entries.get(hello.name)
            was_down = known is not None and known.down
            if known is not None:
                record.state = known.record.state  # a drain outlives reconnects
            if known is None or known.record != record:
                await self.store.put_agent(record)
            if self.term_over:  # ended while it wrote: the agent dials the next leader
                raise NotLeader("this scheduler no longer leads")
            entry, session, replaced, touched = self.agents.hello(record, list(hello.instances))
            if replaced is not None:  # a newer stream replaces an older one
                replaced.outbox.put_nowait(None)
            self.read.touch_agent(hello.name, touched)
            if was_down:
                self.agent_event(hello.name, "up again", touched)
            log.info("agent %s connected from %s (capacity %d, running %d)", hello.name,
                     hello.address, hello.capacity, len(hello.instances))
            push(self.world, entry, self.times, force=True,
                 kept=self.endpoints.kept().get(hello.name, []))
        self.poke()
        return entry, session

    def agent_heartbeat(self, name: str) -> None:
        if self.agents.heartbeat(name):
            self.read.touch_agent(name)
            self.agent_event(name, "up again", ())
            self.poke()

    def agent_status(self, name: str, status: pb.InstanceStatus) -> None:
        key = InstanceKey(status.app, status.id)
        entry = self.agents.entries[name]
        given = entry.session.given if entry.session is not None else set()
        hosted = self.world.hosted.get(name, ())
        if key not in entry.reports and key not in hosted and key not in given:
            self.ignore_report(name, f"{key.app}/{key.id} was never assigned to it")
            return  # (given: it may still report one it was told to stop)
        if status.state == InstanceState.STOPPED and key not in hosted:
            given.discard(key)
        before = entry.report(key, status.release)
        self.agents.status(name, status)
        self.instance_event(name, status, before)
        self.read.touch((key,))
        where = self.world.assignments.get(key)
        # A handoff may finish, a rollout go on, or an at_most_once instance now be placed
        # elsewhere (only then: a pass over every instance for each copy stopped by a
        # scale-down is waste).
        rollout = self.world.apps.rollouts.get(key.app)
        handoff = where is not None and where.previous and status.state == InstanceState.RUNNING
        if handoff or (rollout is not None and rollout.status in ACTIVE):
            self.poke()
        elif self.endpoints.watchers and _serves(before) != _serves(status):
            self.poke()  # an endpoint comes or goes: load balancers hear of it in a pass
        elif status.state == InstanceState.STOPPED and (where is None or where.agent != name):
            release = self.world.apps.current_release(key.app)
            ptype = release.types.get(key.type) if release is not None else None
            if ptype is not None and ptype.at_most_once:
                self.poke()

    # ---- events (`ctl events`) --------------------------------------------------------

    def agent_event(self, name: str, what: str, reported: Iterable[InstanceKey]) -> None:
        """`agent NAME <what> (web.1, web.2)` in the feed of every app with instances on the
        agent: assigned to it, or reported by it (of apps that exist: an agent may say
        anything)."""
        ids: dict[str, set[str]] = {}
        for key in {*self.world.hosted.get(name, ()), *reported}:
            if key.app in self.world.apps.current:
                ids.setdefault(key.app, set()).add(key.id)
        for app, some in sorted(ids.items()):
            self.events.add(app, "agent", f"agent {name} {what} ({listed(some)})")

    def instance_event(self, name: str, status: pb.InstanceStatus,
                       before: pb.InstanceStatus | None) -> None:
        """An assigned instance that has just crashed or turned unhealthy (not each repeated
        report of it), with the agent's reason (made printable by the feed)."""
        state = status.state
        if state not in (InstanceState.CRASHED, InstanceState.UNHEALTHY) \
                or (before is not None and before.state == state) \
                or InstanceKey(status.app, status.id) not in self.world.assignments:
            return
        reason = f": {status.reason}" if status.reason else ""
        self.events.add(status.app, "instance", f"{status.id} v{status.release} "
                        f"{InstanceState(state).word} on {name}{reason}")

    def moving(self, migrate: Mapping[InstanceKey, str]) -> list[tuple[str, str]]:
        """(app, `web.3 moved from a1 to a2 (a1 down)`) of each instance a plan moves, read
        before the plan is written (then the old agent is forgotten); see moved()."""
        out = []
        for key, to in sorted(migrate.items()):
            where = self.world.assignments.get(key)
            if where is None or where.agent == to:
                continue
            old = self.agents.entries.get(where.agent)
            why = "gone" if old is None else "down" if old.down else \
                "draining" if old.draining else ""
            out.append((key.app, f"{key.id} moved from {where.agent} to {to}"
                        + (f" ({where.agent} {why})" if why else "")))
        return out

    def moved(self, moves: Iterable[tuple[str, str]]) -> None:
        """The moves of moving() were written: into the feeds."""
        for app, text in moves:
            self.events.add(app, "instance", text)

    def ignore_report(self, name: str, why: str) -> None:
        """A report the scheduler will not believe: counted, and said once per agent."""
        instruments.IGNORED_REPORTS.inc()
        entry = self.agents.entries.get(name)
        if entry is not None and not entry.warned:
            entry.warned = True
            log.warning("agent %s: ignoring a report (%s); further ones are only counted "
                        "(formation_ignored_reports_total)", name, why)

    def agent_gone(self, entry: AgentEntry, session: Session) -> None:
        if self.agents.gone(entry, session):
            log.info("agent %s disconnected", entry.record.name)
            self.poke()


def _serves(report: pb.InstanceStatus | None) -> bool:
    """Does the copy count as an endpoint (endpoints.py), as far as this report says?"""
    return report is not None and report.state == InstanceState.RUNNING and report.port > 0
