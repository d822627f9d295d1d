"""The endpoints that load balancers (formation-lb) follow, and deregistration before stop.

An endpoint is a copy of an instance that its agent reports running (healthy, if its type has
a health check) and that stays in its agent's list. A copy about to be stopped (a scale-down,
a rollout or restart replacing it, a drain or move) leaves its agent's list: it leaves the
endpoints at once, in a new version, and its agent keeps it (`kept`) until every watcher that
acknowledges and could have balanced to it has applied that version, or its type's
deregister_timeout has passed. Only then is the agent told to stop it.

Pure: no I/O, no clock (callers pass a monotonic `now`), no asyncio (a watcher's `wake` is a
callback).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from scheduler.placement import RELEASE_RUN, InstanceKey

MAX_WATCHERS = 64  # acknowledging streams at once; more are refused (RESOURCE_EXHAUSTED)
MAX_OTHER_WATCHERS = 16  # streams that do not acknowledge (viewers), in a pool of their own
GHOST_TTL = 30.0  # seconds a disconnected load balancer still holds copies (see ghosts)
EMPTY: frozenset[Ep] = frozenset()

Item = tuple[InstanceKey, int, int]  # an agent's list item: instance, release, generation
Copy = tuple[str, InstanceKey, int, int]  # agent, instance, release, generation


class Ep(NamedTuple):
    """One endpoint as a watcher receives it (pb.Endpoint)."""
    app: str
    type: str
    instance: str
    agent: str
    host: str
    port: int
    release: int
    generation: int


@dataclass
class Watcher:
    """One WatchEndpoints stream."""
    app: str  # "" for every app
    type: str  # "" for every type
    name: str
    acknowledges: bool
    wake: Callable[[], None]
    first: int | None = None  # the version of the first set it was given
    acked: int = 0            # the newest version it said it applied
    given: int = 0            # the newest version it was given
    shown: frozenset[Ep] | None = None  # the set it was last given (or is due)
    due: tuple[int, frozenset[Ep]] | None = None  # the set to send next, if any

    def wants(self, app: str, ptype: str) -> bool:
        return (not self.app or self.app == app) and (not self.type or self.type == ptype)


@dataclass
class Leaving:
    """A copy that left the endpoints, and until when it may wait for acknowledgements."""
    app: str
    type: str
    version: int     # the first version without it
    since: float
    deadline: float


@dataclass
class Released:
    """A copy whose deregistration ended: after `waited` seconds, acknowledged or not."""
    waited: float
    timed_out: bool


@dataclass
class Endpoints:
    version: int = 0
    current: dict[Copy, Ep] = field(default_factory=dict)
    # current by (app, type), each set kept as the same object while it does not change:
    # a change to one type costs the watchers of the others nothing.
    groups: dict[tuple[str, str], frozenset[Ep]] = field(default_factory=dict)
    leaving: dict[Copy, Leaving] = field(default_factory=dict)
    watchers: dict[int, Watcher] = field(default_factory=dict)
    # Acknowledging watchers whose stream ended, by name, and when: their HAProxy still
    # balances to what they were last given, so they hold copies as if connected, until the
    # same name acknowledges a set on a new stream, or GHOST_TTL passes.
    ghosts: dict[str, tuple[Watcher, float]] = field(default_factory=dict)
    ready: bool = False  # a first set was computed: watchers may be given sets
    _next_id: int = 0

    # ---- watchers ---------------------------------------------------------------------

    def watch(self, watcher: Watcher) -> int | None:
        """Register a watcher; None if its pool is full (MAX_WATCHERS acknowledging, and
        MAX_OTHER_WATCHERS others: viewers cannot take a load balancer's place). It is given
        the current set as soon as there is one."""
        same = sum(w.acknowledges == watcher.acknowledges for w in self.watchers.values())
        if same >= (MAX_WATCHERS if watcher.acknowledges else MAX_OTHER_WATCHERS):
            return None
        self._next_id += 1
        self.watchers[self._next_id] = watcher
        if self.ready:
            self._offer(watcher)
        return self._next_id

    def unwatch(self, wid: int, now: float) -> None:
        watcher = self.watchers.pop(wid, None)
        if watcher is not None and watcher.acknowledges and watcher.first is not None:
            self.ghosts.pop(watcher.name, None)
            if len(self.ghosts) < MAX_WATCHERS:
                self.ghosts[watcher.name] = (watcher, now)

    def take(self, watcher: Watcher) -> tuple[int, frozenset[Ep]] | None:
        """The set to send the watcher now (only the newest: sets replace each other)."""
        due, watcher.due = watcher.due, None
        if due is not None:
            watcher.given = due[0]
            if watcher.first is None:
                watcher.first = due[0]
        return due

    def ack(self, watcher: Watcher, version: int) -> bool:
        """The watcher applied `version`; False if it was never given that version. Its
        ghost, if any, has then applied a whole set too: it holds nothing more."""
        if not 0 < version <= watcher.given:
            return False
        watcher.acked = max(watcher.acked, version)
        if watcher.acknowledges:
            self.ghosts.pop(watcher.name, None)
        return True

    def active(self) -> bool:
        """Is there anything to compute or hold? (Not with no watcher and nothing held: then
        a pass costs nothing more than before there were endpoints.)"""
        return bool(self.watchers or self.leaving or self.ghosts)

    def idle(self) -> None:
        """Nothing is active: forget the set, so the next watcher is given a fresh one, never
        one from before it (whose copies may long be gone)."""
        if self.ready:  # (this runs every pass while nobody watches: mostly nothing to do)
            self.current, self.groups, self.ready = {}, {}, False

    # ---- the set, and deregistration ----------------------------------------------------

    def publish(self, found: dict[Copy, Ep], now: float,
                timeout: Callable[[str, str, int], float]) -> bool:
        """The endpoints found this pass; a change is a new version, offered to the watchers
        it concerns. Copies that left start their deregistration. True if it changed."""
        first = not self.ready
        self.ready = True
        if found == self.current and not first:
            return False
        self.version += 1
        for copy, ep in self.current.items():
            if copy not in found and copy not in self.leaving:
                wait = timeout(ep.app, ep.type, ep.release)
                self.leaving[copy] = Leaving(ep.app, ep.type, self.version, now, now + wait)
        for copy in found:
            self.leaving.pop(copy, None)  # back (healthy again) before it was stopped
        self.current = found
        grouped: dict[tuple[str, str], set[Ep]] = {}
        for ep in found.values():
            grouped.setdefault((ep.app, ep.type), set()).add(ep)
        old, self.groups = self.groups, {}
        for key, eps in grouped.items():
            same = old.get(key)
            self.groups[key] = same if same is not None and same == eps else frozenset(eps)
        for watcher in self.watchers.values():
            self._offer(watcher)
        return True

    def _offer(self, watcher: Watcher) -> None:
        if watcher.app and watcher.type:  # the usual watcher: one type's set, as it is
            mine = self.groups.get((watcher.app, watcher.type), EMPTY)
        else:
            mine = frozenset().union(*(eps for (app, ptype), eps in self.groups.items()
                                       if watcher.wants(app, ptype)))
        if mine is not watcher.shown and mine != watcher.shown:
            watcher.shown = mine
            watcher.due = (self.version, mine)
            watcher.wake()

    def holds(self, copy: Copy, now: float) -> bool:
        """Must its agent keep the copy? Yes while a watcher that acknowledges, wants its
        type and was given a set with it has not applied one without it (connected, or a
        ghost), until the deadline."""
        left = self.leaving.get(copy)
        if left is None or now >= left.deadline:
            return False
        watchers = [*self.watchers.values(), *(w for w, _ in self.ghosts.values())]
        return any(w.acknowledges and w.wants(left.app, left.type) and w.first is not None
                   and w.first < left.version and w.acked < left.version for w in watchers)

    def settle(self, now: float) -> list[Released]:
        """Forget the copies no longer held, and ghosts past GHOST_TTL; what each copy
        waited (for the metrics)."""
        for name in [n for n, (_, gone) in self.ghosts.items() if now - gone >= GHOST_TTL]:
            del self.ghosts[name]
        done = [c for c in self.leaving if not self.holds(c, now)]
        out = []
        for copy in done:
            left = self.leaving.pop(copy)
            out.append(Released(now - left.since, now >= left.deadline))
        return out

    def kept(self) -> dict[str, list[Item]]:
        """Per agent, the copies it keeps running although they left its list (after
        settle(): every copy still leaving is held)."""
        out: dict[str, list[Item]] = {}
        for agent, key, release, generation in self.leaving:
            out.setdefault(agent, []).append((key, release, generation))
        return out

    def next_deadline(self) -> float | None:
        return min((left.deadline for left in self.leaving.values()), default=None)


def found(lists: Mapping[str, Iterable[Item]], host: Callable[[str], str],
          port: Callable[[str, InstanceKey, int, int], int]) -> dict[Copy, Ep]:
    """The endpoints of the agents' lists: the copies whose `port` is not 0 (the caller's rule:
    running on that release, with a port). Release-phase runs serve nothing."""
    out: dict[Copy, Ep] = {}
    for agent, items in lists.items():
        for key, release, generation in items:
            if key.id.startswith(RELEASE_RUN):
                continue
            p = port(agent, key, release, generation)
            if p:
                out[(agent, key, release, generation)] = Ep(
                    key.app, key.type, key.id, agent, host(agent), p, release, generation)
    return out
