"""What happened to each app, as one bounded, time-ordered feed (`ctl events`), like Heroku's
activity feed or `kubectl get events`: releases, rollouts, scales, config changes (names
only), instances that crashed, went unhealthy or moved, agents down and up again.

Pure: no I/O (the clock is passed in). The scheduler records events as they happen
(`add`), writes each changed feed to etcd at most once a second (eventstore.py) and reads
them back when it starts (`restore`).

Bounds, per app (docs/limits.md): the newest MAX_EVENTS events, at most MAX_BYTES of them as
JSON (the etcd value); older ones go. A text is one printable line of at most MAX_TEXT
characters: control and other unprintable characters are shown escaped (`\\x1b`, `\\u202e`:
instance reasons come from agents, and an agent may send anything), and a longer one is cut
with "…". Times are strictly increasing per app, so the feed is in time order even if the
wall clock steps back.

Followers (`ctl events -f`): at most MAX_FOLLOWERS per app (MAX_FOLLOWERS_TOTAL in all; one
more is TooManyFollowers), each with a queue of at most FOLLOWER_EVENTS. A follower that
does not read loses events rather than holding anyone up; the next event it gets carries
how many it missed, like the Logs stream's `missed`.
"""
from __future__ import annotations

import asyncio
import builtins
import collections
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from scheduler.leadership import NotLeader

KINDS = ("release", "rollout", "scale", "config", "restart", "instance", "agent")
MAX_EVENTS = 1000            # events kept per app ...
MAX_BYTES = 256 * 1024       # ... and at most this much JSON of them (the etcd value)
MAX_TEXT = 512               # characters of an event's text, "…" included when cut
MAX_AUTHOR = 255             # characters of its author (what Control accepts, too)
MAX_FOLLOWERS = 64           # followers of one app's feed at a time ...
MAX_FOLLOWERS_TOTAL = 1024   # ... and of all feeds together
FOLLOWER_EVENTS = 1000       # events queued for one follower; beyond, missed
STEP = 1e-6                  # seconds: the least an event's time is after the one before


@dataclass(frozen=True)
class Event:
    """One thing that happened to an app: when (unix seconds, stamped by the scheduler), what
    kind (KINDS), one printable line, and who did it ("" if the system did)."""
    time: float
    kind: str
    text: str
    author: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: object) -> Event:
        """An event as stored; ValueError (or TypeError, KeyError) if it is not one."""
        if not isinstance(raw, dict):
            raise ValueError("an event must be an object")
        time, kind, text, author = raw["time"], raw["kind"], raw["text"], raw.get("author", "")
        if isinstance(time, bool) or not isinstance(time, int | float) \
                or not math.isfinite(time):
            raise ValueError(f"invalid event time {time!r}")
        if kind not in KINDS or not isinstance(text, str) or not isinstance(author, str):
            raise ValueError(f"invalid event kind, text or author ({kind!r})")
        return cls(float(time), kind, printable(text), printable(author, MAX_AUTHOR))


def _escaped(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """text as one printable line of at most `limit` characters: every character that is not
    printable (controls, newlines, tabs, bidi overrides, ...) escaped as `\\x1b`, and cut with
    "…" (never inside an escape) if longer. Reads at most about `limit` characters of text."""
    out: builtins.list[str] = []
    size = 0
    for c in text:
        piece = c if c.isprintable() else _escaped(c)
        if size + len(piece) > limit:
            while out and size + 1 > limit:
                size -= len(out.pop())
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def scale_text(before: Mapping[str, int], after: Mapping[str, int], undo: bool = False) -> str:
    """A change of counts as the feed says it: `web 2 → 5, worker 0 → 1` (`(undo)` after)."""
    change = ", ".join(f"{t} {before.get(t, 0)} → {n}" for t, n in sorted(after.items()))
    return change + (" (undo)" if undo else "")


def listed(ids: Iterable[str], most: int = 5) -> str:
    """`web.1, web.2 and 3 more`: a few instance ids of a set, in order."""
    shown = sorted(ids, key=lambda i: (i.rpartition(".")[0], len(i), i))
    more = len(shown) - most
    return ", ".join(shown[:most]) + (f" and {more} more" if more > 0 else "")


def decode_events(value: bytes) -> builtins.list[Event]:
    """A stored feed (a JSON list of events); ValueError if it is not one."""
    raw = json.loads(value)
    if not isinstance(raw, builtins.list):
        raise ValueError("events must be a JSON list")
    return sorted((Event.from_dict(r) for r in raw), key=lambda e: e.time)


class TooManyFollowers(Exception):
    """A feed (or all of them) has as many followers as it may."""


class Follower:
    """One follower's queue of events, bounded: an event that does not fit is dropped and
    counted, and the next one queued carries that count."""

    def __init__(self, limit: int = FOLLOWER_EVENTS) -> None:
        self.limit = limit
        self.items: collections.deque[tuple[int, Event]] = collections.deque()
        self.missed = 0  # events dropped since the last one queued
        self.ready = asyncio.Event()
        self.closed = False

    def put(self, event: Event) -> None:
        if len(self.items) >= self.limit:
            self.missed += 1
            return
        self.items.append((self.missed, event))
        self.missed = 0
        self.ready.set()

    def take(self) -> tuple[int, Event] | None:
        """The next event and how many were missed just before it; None if none is queued."""
        if not self.items:
            self.ready.clear()
            return None
        return self.items.popleft()

    async def get(self) -> tuple[int, Event]:
        """The next event; NotLeader once the feed is closed (its scheduler's term ended)."""
        while True:  # each pass returns, or waits for a put
            item = self.take()
            if item is not None:
                return item
            if self.closed:
                raise NotLeader("this scheduler no longer leads: follow the events again")
            await self.ready.wait()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


@dataclass
class _Feed:
    events: collections.deque[Event] = field(default_factory=collections.deque)
    sizes: collections.deque[int] = field(default_factory=collections.deque)  # JSON bytes
    size: int = 0


class EventLog:
    """Every app's feed of events, and its followers."""

    def __init__(self, clock: Callable[[], float], max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES, max_followers: int = MAX_FOLLOWERS,
                 max_followers_total: int = MAX_FOLLOWERS_TOTAL,
                 follower_events: int = FOLLOWER_EVENTS) -> None:
        self.clock = clock
        self.max_events, self.max_bytes = max_events, max_bytes
        self.max_followers, self.max_followers_total = max_followers, max_followers_total
        self.follower_events = follower_events
        self._feeds: dict[str, _Feed] = {}
        self._followers: dict[str, set[Follower]] = {}
        self._dirty: set[str] = set()  # apps whose feed changed since it was last taken
        self.changed = asyncio.Event()  # set while any feed is dirty

    def add(self, app: str, kind: str, text: str, author: str = "") -> None:
        """Record that something happened to app now (kind: one of KINDS; author: who did it,
        "" for the system); text and author are made printable and cut (see the module)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        feed = self._feeds.setdefault(app, _Feed())
        now = self.clock()
        if feed.events:
            now = max(now, feed.events[-1].time + STEP)
        event = Event(now, kind, printable(text), printable(author, MAX_AUTHOR))
        self._append(feed, event)
        for follower in self._followers.get(app, ()):
            follower.put(event)
        self._dirty.add(app)
        self.changed.set()

    def _append(self, feed: _Feed, event: Event) -> None:
        size = len(event.to_json().encode()) + 2  # and ", " (or "[]") in the stored list
        feed.events.append(event)
        feed.sizes.append(size)
        feed.size += size
        while len(feed.events) > self.max_events or feed.size > self.max_bytes:
            feed.events.popleft()
            feed.size -= feed.sizes.popleft()

    def list(self, app: str) -> builtins.list[Event]:
        """The app's kept events, oldest first ([] for an app with none, or none known)."""
        feed = self._feeds.get(app)
        return builtins.list(feed.events) if feed is not None else []

    # ---- followers --------------------------------------------------------------------

    def subscribe(self, app: str) -> Follower:
        """A new follower of app's feed: it gets every event added from now on."""
        followers = self._followers.get(app, set())
        if len(followers) >= self.max_followers:
            raise TooManyFollowers(f"app {app!r} has {self.max_followers} followers of its "
                                   "events already")
        if sum(map(len, self._followers.values())) >= self.max_followers_total:
            raise TooManyFollowers(f"{self.max_followers_total} followers of events already")
        follower = Follower(self.follower_events)
        self._followers.setdefault(app, set()).add(follower)
        return follower

    def close(self) -> None:
        """No more events come (the term ended): every follower is told once it has read
        what was queued."""
        for followers in self._followers.values():
            for follower in followers:
                follower.close()

    def unsubscribe(self, app: str, follower: Follower) -> None:
        followers = self._followers.get(app)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[app]

    # ---- persistence ------------------------------------------------------------------

    def restore(self, app: str, events: Iterable[Event]) -> None:
        """The app's events as etcd holds them (at start-up, or written by another
        scheduler): they replace the kept ones, but any kept event newer than the newest of
        them stays, after them (so a write of this scheduler read back changes nothing)."""
        loaded = sorted(events, key=lambda e: e.time)
        old = self._feeds.get(app)
        newer = builtins.list(old.events) if old is not None else []
        if loaded:
            newer = [e for e in newer if e.time > loaded[-1].time]
        feed = self._feeds[app] = _Feed()
        for event in (*loaded, *newer):
            self._append(feed, event)

    def forget(self, app: str) -> None:
        """The app's feed was deleted from etcd: memory follows."""
        self._feeds.pop(app, None)
        self._dirty.discard(app)

    def encode(self, app: str) -> bytes:
        """The app's kept events as stored in etcd: a JSON list, at most max_bytes."""
        feed = self._feeds.get(app)
        events = feed.events if feed is not None else ()
        return ("[" + ", ".join(e.to_json() for e in events) + "]").encode()

    def take_dirty(self) -> builtins.list[str]:
        """The apps whose feed changed since the last call (to be written), sorted."""
        apps = sorted(self._dirty)
        self._dirty.clear()
        self.changed.clear()
        return apps

    def mark_dirty(self, apps: Iterable[str]) -> None:
        """These apps' feeds still need writing (a write failed)."""
        self._dirty.update(a for a in apps if a in self._feeds)
        if self._dirty:
            self.changed.set()
