"""The scheduler's table of agents: liveness from heartbeats, their sessions and their reports.

Agent states, as the scheduler sees them (draining is set by an operator, down by the clock):

    (hello) --> READY <--- hello ---- DOWN
                  |  \\               ^
     drain/undrain|   `-- no heartbeat for agent_ttl
                  v                   |
               DRAINING --------------'
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from common.states import AgentState, InstanceState
from proto import formation_pb2 as pb
from scheduler.placement import AgentView, InstanceKey
from scheduler.store import AgentRecord


@dataclass
class Session:
    """One open AgentLink stream; the scheduler puts messages on `outbox`, None ends it."""
    outbox: asyncio.Queue[pb.SchedulerMessage | None] = field(default_factory=asyncio.Queue)
    last_sent: tuple | None = None  # the last assignment list pushed, to skip repeats


@dataclass
class AgentEntry:
    """One agent: its durable record plus what only this scheduler process knows."""
    record: AgentRecord
    deadline: float             # monotonic time after which it is down without a heartbeat
    last_seen: float = 0.0      # wall clock, for display
    down: bool = False
    session: Session | None = None
    reports: dict[InstanceKey, pb.InstanceStatus] = field(default_factory=dict)

    @property
    def state(self) -> AgentState:
        if self.down:
            return AgentState.DOWN
        return AgentState.DRAINING if self.record.state == "draining" else AgentState.READY

    def view(self) -> AgentView:
        alive = not self.down
        return AgentView(self.record.name, self.record.capacity, alive=alive,
                         schedulable=alive and self.session is not None
                         and self.record.state == "ready",
                         draining=self.record.state == "draining")

    def runs(self, key: InstanceKey) -> bool:
        """Does this agent report a copy of key that is not stopped?"""
        report = self.reports.get(key)
        return report is not None and report.state != InstanceState.STOPPED


class AgentTable:
    """Agents by name, with the heartbeat deadline bookkeeping."""

    def __init__(self, ttl: float, clock=time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
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

    def seen(self, name: str) -> AgentEntry:
        entry = self.entries[name]
        entry.deadline = self.clock() + self.ttl
        entry.last_seen = time.time()
        return entry

    def expire(self) -> list[str]:
        """Mark agents whose deadline passed as down; return their names."""
        now = self.clock()
        gone = [e for e in self.entries.values() if not e.down and e.deadline <= now]
        for e in gone:
            e.down = True
            e.reports.clear()
        return [e.record.name for e in gone]

    def next_deadline(self) -> float | None:
        live = [e.deadline for e in self.entries.values() if not e.down]
        return min(live) if live else None

    def views(self) -> dict[str, AgentView]:
        return {name: e.view() for name, e in self.entries.items()}
