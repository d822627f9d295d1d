"""The scheduler's table of agents: liveness from heartbeats, their sessions and their reports.
It owns the agents' session events (hello, heartbeat, status, gone) and their states.

Agent states, as the scheduler sees them (draining is set by an operator, down by the clock;
drained is a draining agent with nothing left, shown by `ctl agents`):

    (hello) --> READY <--- hello ---- DOWN
                  |  \\               ^
     drain/undrain|   `-- no heartbeat for agent_ttl
                  v                   |
               DRAINING --------------'

Each event returns the instances whose rows it may have changed, for the read models.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.states import AgentState, InstanceState
from proto import formation_pb2 as pb
from scheduler.placement import AgentView, InstanceKey
from scheduler.records import AgentRecord

Copy = tuple[int, int]  # which copy of an instance: (release, generation)


@dataclass
class Session:
    """One open AgentLink stream; the scheduler puts messages on `outbox`, None ends it."""
    outbox: asyncio.Queue[pb.SchedulerMessage | None] = field(default_factory=asyncio.Queue)
    last_sent: tuple | None = None  # the last assignment list pushed, to skip repeats
    given: set[InstanceKey] = field(default_factory=set)  # every key pushed, until stopped
    too_large: bool = False  # its list is over the link's limit (said once)


@dataclass
class AgentEntry:
    """One agent: its durable record plus what only this scheduler process knows."""
    record: AgentRecord
    deadline: float             # monotonic time after which it is down without a heartbeat
    last_seen: float = 0.0      # wall clock, for display
    down: bool = False
    down_since: float = 0.0     # monotonic time it was marked down
    session: Session | None = None
    # Its copies by instance and (release, generation): during a rollout or a restart an id
    # may run two copies.
    reports: dict[InstanceKey, dict[Copy, pb.InstanceStatus]] = field(default_factory=dict)
    # When each copy last turned running (wall clock, stamped here: agents' clocks differ);
    # a rollout proves a new copy by how long it has been running.
    running_since: dict[tuple[InstanceKey, Copy], float] = field(default_factory=dict)
    warned: bool = False        # said once that it sends reports that are ignored

    @property
    def draining(self) -> bool:
        return self.record.state == AgentState.DRAINING.word

    @property
    def state(self) -> AgentState:
        if self.down:
            return AgentState.DOWN
        return AgentState.DRAINING if self.draining else AgentState.READY

    def view(self) -> AgentView:
        alive = not self.down
        return AgentView(self.record.name, self.record.capacity, alive=alive,
                         schedulable=alive and self.session is not None and not self.draining,
                         draining=self.draining)

    def runs(self, key: InstanceKey) -> bool:
        """Does this agent report a copy of key (on any release) that is not stopped?"""
        return bool(self.reports.get(key))

    def report(self, key: InstanceKey, release: int | None = None,
               generation: int | None = None) -> pb.InstanceStatus | None:
        """Its report of key's copy on `release` and `generation`; None: of its newest one."""
        copies = self.reports.get(key)
        if not copies:
            return None
        if release is None:
            return copies[max(copies)]
        if generation is not None:
            return copies.get((release, generation))
        return copies[max(v for v in copies if v[0] == release)] \
            if any(v[0] == release for v in copies) else None

    def since(self, key: InstanceKey, copy: Copy) -> float | None:
        """Since when its copy `copy` of key runs (None: it does not)."""
        report = self.reports.get(key, {}).get(copy)
        if report is None or report.state != InstanceState.RUNNING:
            return None
        return self.running_since.get((key, copy), 0.0)

    def put_report(self, status: pb.InstanceStatus, now: float) -> None:
        key, copy = InstanceKey(status.app, status.id), (status.release, status.generation)
        copies = self.reports.setdefault(key, {})
        before = copies.get(copy)
        if status.state == InstanceState.STOPPED:
            copies.pop(copy, None)
            if not copies:
                del self.reports[key]
        else:
            copies[copy] = status
        if status.state != InstanceState.RUNNING:
            self.running_since.pop((key, copy), None)
        elif before is None or before.state != InstanceState.RUNNING:
            self.running_since[(key, copy)] = now

    def clear_reports(self) -> None:
        self.reports.clear()
        self.running_since.clear()


class AgentTable:
    """Agents by name, with the heartbeat deadline bookkeeping."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 forget_after: float = 86400.0) -> None:
        self.ttl = ttl
        self.clock = clock
        self.forget_after = forget_after  # a down agent is forgotten this long after
        self.entries: dict[str, AgentEntry] = {}

    def restore(self, records: dict[str, AgentRecord]) -> None:
        """Agents known from etcd, not yet reconnected: see grace()."""
        for name, record in records.items():
            self.entries[name] = AgentEntry(record, deadline=float("inf"))

    def grace(self, seconds: float) -> None:
        """Once the scheduler serves, give agents that have not reconnected `seconds` more
        before they count as down: their redial backoff may be that far behind."""
        for entry in self.entries.values():
            if entry.session is None and not entry.down:
                entry.deadline = min(entry.deadline, self.clock() + seconds)

    def _seen(self, name: str) -> AgentEntry:
        entry = self.entries[name]
        entry.deadline = self.clock() + self.ttl
        entry.last_seen = time.time()
        return entry

    # ---- session events ---------------------------------------------------------------

    def hello(self, record: AgentRecord, statuses: list[pb.InstanceStatus]
              ) -> tuple[AgentEntry, Session, Session | None, set[InstanceKey]]:
        """A (re)connecting agent: a new session replaces any older one. Returns the entry,
        the new session, the replaced one (to close) and the instances touched."""
        entry = self.entries.get(record.name)
        if entry is None:
            entry = self.entries[record.name] = AgentEntry(record, deadline=0)
        old = entry.session
        touched = set(entry.reports)
        entry.record, entry.session, entry.down = record, Session(), False
        entry.clear_reports()
        now = time.time()
        for status in statuses:
            if status.state != InstanceState.STOPPED:
                entry.put_report(status, now)
        self._seen(record.name)
        return entry, entry.session, old, touched | set(entry.reports)

    def heartbeat(self, name: str) -> bool:
        """True if the agent was down and counts as alive again."""
        entry = self._seen(name)
        if entry.down:  # came back before its stream did
            entry.down = False
            return True
        return False

    def status(self, name: str, status: pb.InstanceStatus) -> InstanceKey:
        entry = self._seen(name)
        entry.put_report(status, time.time())
        return InstanceKey(status.app, status.id)

    def gone(self, entry: AgentEntry, session: Session) -> bool:
        """The stream ended; the agent stays alive until its heartbeat deadline passes. True
        if that was its current session."""
        if entry.session is session:
            entry.session = None
            return True
        return False

    def expire(self) -> list[tuple[AgentEntry, set[InstanceKey]]]:
        """Mark agents whose deadline passed as down; return them with what they reported."""
        now = self.clock()
        gone = [e for e in self.entries.values() if not e.down and e.deadline <= now]
        out = []
        for e in gone:
            e.down, e.down_since = True, now
            out.append((e, set(e.reports)))
            e.clear_reports()
        return out

    def forget(self, name: str) -> AgentEntry:
        """Remove a down agent from the table (its record is deleted by the caller)."""
        return self.entries.pop(name)

    def set_draining(self, name: str, draining: bool) -> AgentRecord:
        """The record with the new state (written to etcd by the caller, then `replace`d)."""
        state = AgentState.DRAINING if draining else AgentState.READY
        return dataclasses.replace(self.entries[name].record, state=state.word)

    def forgotten(self) -> list[str]:
        """Agents down for forget_after: the caller deletes their records and forget()s them."""
        now = self.clock()
        return [name for name, e in self.entries.items()
                if e.down and now - e.down_since >= self.forget_after]

    def next_deadline(self) -> float | None:
        """When the next agent may go down, or a down one be forgotten."""
        times = [e.down_since + self.forget_after if e.down else e.deadline
                 for e in self.entries.values()]
        return min(times) if times else None

    def views(self) -> dict[str, AgentView]:
        return {name: e.view() for name, e in self.entries.items()}
