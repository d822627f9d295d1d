"""Placement: a pure function from (formation, agents, assignments) to a Plan. No I/O.

Rules, in order (docs/architecture.md):
 1. only ready agents (not down, not draining) receive new instances;
 2. no agent goes over its capacity;
 3. instances on live agents stay where they are (scale-up only adds, scale-down only removes);
 4. each process type spreads evenly: a new instance goes to the agent with the fewest of its
    type, then the least loaded, then the first by name;
 5. deterministic; what cannot be placed is pending.

The Plan sorts every wanted or assigned instance into buckets, like Nomad's reconciler:

    wanted & assigned to a live agent  -> keep      (and `update` if its release is old,
                                          unless a rollout replaces it: scheduler/rollouts.py)
    wanted & on a down agent           -> migrate   (or pending + unassign if nowhere fits)
    wanted & on a draining agent       -> migrate with a handoff: the old copy runs until the
                                          new one does; at_most_once types are evicted instead
                                          (stopped first, placed once the old copy is gone)
    wanted & unassigned                -> place     (or pending; also while `blocked`)
    assigned & not wanted              -> stop      (scale-down: highest numbers first)

A release phase's run (`release.N`, scheduler/releasephase.py) is not placement's: it takes
a slot on its agent, and is never placed, moved or stopped here.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from common.names import RELEASE_TYPE, instance_id

RELEASE_RUN = RELEASE_TYPE + "."  # the id prefix of a release phase's run (no type has a dot)


class InstanceKey(NamedTuple):
    """One instance of an app: `app`, `web.3`. A tuple, so hashing and ordering run in C (the
    hot path of placement); ids are validated where they enter, not here."""
    app: str
    id: str

    @property
    def type(self) -> str:
        return self.id.rpartition(".")[0]

    @property
    def number(self) -> int:
        return int(self.id.rpartition(".")[2])


@dataclass(frozen=True)
class AgentView:
    """What placement needs to know of an agent."""
    name: str
    capacity: int
    alive: bool = True        # heartbeating (or not yet timed out)
    schedulable: bool = True  # alive, connected and not draining
    draining: bool = False    # its instances move elsewhere


@dataclass(frozen=True)
class Assigned:
    """Where an instance runs and which release it runs. `previous` is the agent that keeps
    the old copy, on `previous_release`, running until this one runs: a drain handoff (on
    another agent) or a rollout's surge (often on the same agent: then it runs both)."""
    agent: str
    release: int
    previous: str = ""
    previous_release: int = 0  # 0: the same as `release` (records written before rollouts)
    generation: int = 0        # `ctl restart`s of the id on this release: a new copy each
    previous_generation: int = 0

    @property
    def old_release(self) -> int:
        """The release of the old copy `previous` keeps."""
        return self.previous_release or self.release

    @property
    def copy(self) -> tuple[int, int]:
        """Which copy it is: (release, generation)."""
        return self.release, self.generation

    @property
    def old_copy(self) -> tuple[int, int]:
        """Which copy `previous` keeps."""
        return self.old_release, self.previous_generation

    def settled(self) -> Assigned:
        """The assignment once its old copy is let go."""
        return Assigned(self.agent, self.release, generation=self.generation)


@dataclass
class Plan:
    """The buckets of one evaluation; `apply` turns them into etcd writes."""
    place: dict[InstanceKey, str] = field(default_factory=dict)    # new -> agent
    migrate: dict[InstanceKey, str] = field(default_factory=dict)  # was on a down agent -> agent
    update: dict[InstanceKey, int] = field(default_factory=dict)   # stays, new release
    stop: list[InstanceKey] = field(default_factory=list)          # assignment removed
    unassign: list[InstanceKey] = field(default_factory=list)      # lost or evicted
    pending: list[InstanceKey] = field(default_factory=list)       # wanted, not placed
    handoff: dict[InstanceKey, str] = field(default_factory=dict)  # migrate: old copy's agent

    def empty(self) -> bool:
        return not (self.place or self.migrate or self.update or self.stop or self.unassign)

    def assignments_after(self, before: Mapping[InstanceKey, Assigned],
                          releases: Mapping[str, int]) -> dict[InstanceKey, Assigned]:
        """The assignment table once this plan is applied."""
        after = dict(before)
        for key in (*self.stop, *self.unassign):
            after.pop(key, None)
        for key, release in self.update.items():
            was = after[key]
            after[key] = Assigned(was.agent, release, was.previous, was.previous_release,
                                  was.generation, was.previous_generation)
        for key, agent in self.place.items():
            after[key] = Assigned(agent, releases[key.app])
        for key, agent in self.migrate.items():
            old = self.handoff.get(key, "")
            was = before[key]
            moved = old and was.release != releases[key.app]  # the old copy keeps its release
            after[key] = Assigned(agent, releases[key.app], old, was.release if moved else 0,
                                  was.generation if was.release == releases[key.app] else 0,
                                  was.generation if old else 0)
        return after


def wanted_instances(desired: Mapping[tuple[str, str], int]) -> list[InstanceKey]:
    """Every instance the formation asks for, `web.1` … `web.N` per (app, type)."""
    return [InstanceKey(app, instance_id(ptype, n))
            for (app, ptype), count in sorted(desired.items()) for n in range(1, count + 1)]


def plan(desired: Mapping[tuple[str, str], int],
         releases: Mapping[str, int],
         agents: Mapping[str, AgentView],
         assignments: Mapping[InstanceKey, Assigned],
         at_most_once: Set[tuple[str, str]] = frozenset(),
         blocked: Set[InstanceKey] = frozenset(),
         running_on: Mapping[InstanceKey, str] = {},
         rolling: Set[tuple[str, str]] = frozenset()) -> Plan:
    """Compute the changes that bring `assignments` to `desired` on `agents`.

    desired: (app, type) -> count, for types of each app's current release;
    releases: app -> current release version;
    at_most_once: (app, type) pairs that must never run twice (evicted, not handed off);
    blocked: instances not to place yet (an old copy of an at_most_once one still runs);
    running_on: where an unassigned instance is reported running; it is kept there if it may;
    rolling: (app, type) pairs a rollout moves to the current release: not `update`d here.
    """
    result = Plan()
    wanted = wanted_instances({k: v for k, v in desired.items() if k[0] in releases})
    wanted_set = set(wanted)
    load: Counter[str] = Counter()
    by_type: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    homeless: dict[tuple[str, str], list[InstanceKey]] = defaultdict(list)
    for key in sorted(assignments):
        where = assignments[key]
        agent = agents.get(where.agent)
        if key.id.startswith(RELEASE_RUN):  # a release phase's run: never placement's,
            if agent is not None and agent.alive:  # but it takes a slot
                load[where.agent] += 1
            continue
        if key not in wanted_set:
            result.stop.append(key)
        elif agent is not None and agent.alive:
            load[where.agent] += 1
            if agent.draining and (key.app, key.type) in at_most_once:
                result.unassign.append(key)
                result.pending.append(key)
                continue
            if agent.draining:
                result.handoff[key] = where.agent
                continue  # placed below; the old copy keeps its slot until the handoff ends
            by_type[(key.app, key.type)][where.agent] += 1
            if where.release != releases[key.app] and (key.app, key.type) not in rolling:
                result.update[key] = releases[key.app]

    # Group what needs a home by (app, type): one heap per group keeps this O(n log agents).
    for key in wanted:
        current = assignments.get(key)
        if key in result.handoff:
            homeless[(key.app, key.type)].append(key)
        elif current is None or not (current.agent in agents and agents[current.agent].alive):
            if key in blocked and current is None:
                result.pending.append(key)
            else:
                homeless[(key.app, key.type)].append(key)

    ready = [a for a in sorted(agents.values(), key=lambda a: a.name) if a.schedulable]
    for group, keys in homeless.items():
        counts = by_type[group]
        heap = [(counts[a.name], load[a.name], a.name) for a in ready if load[a.name] < a.capacity]
        heapq.heapify(heap)
        for key in keys:
            lost = key in assignments
            name = _sticky_home(key, running_on, agents, load, result.handoff)
            while name is None and heap:
                n_type, n_load, candidate = heapq.heappop(heap)
                if (n_type, n_load) != (counts[candidate], load[candidate]):
                    # stale entry (a sticky placement changed it): re-file it
                    if load[candidate] < agents[candidate].capacity:
                        heapq.heappush(heap, (counts[candidate], load[candidate], candidate))
                    continue
                name = candidate
                if load[name] + 1 < agents[name].capacity:
                    heapq.heappush(heap, (n_type + 1, n_load + 1, name))
            if name is None:
                if key in result.handoff:  # nowhere to go: it stays where it is
                    del result.handoff[key]
                    continue
                result.pending.append(key)
                if lost:
                    result.unassign.append(key)
                continue
            (result.migrate if lost else result.place)[key] = name
            counts[name] += 1
            load[name] += 1
    return result


def _sticky_home(key: InstanceKey, running_on: Mapping[InstanceKey, str],
                 agents: Mapping[str, AgentView], load: Counter[str],
                 handoff: Mapping[InstanceKey, str]) -> str | None:
    """An agent that already runs this instance (say, one that came back after it was counted
    down) keeps it, if it may: no restart, no second copy."""
    name = running_on.get(key)
    if name is None or key in handoff:
        return None
    agent = agents.get(name)
    if agent is None or not agent.schedulable or load[name] >= agent.capacity:
        return None
    return name
