"""The event feed (`ctl events`) without processes or etcd: scheduler/eventlog.py's bounds,
order, cutting, followers and JSON; its persistence (eventstore.py) on a fake store; and what
the scheduler records, driven through the methods the gRPC services call (tests/memstore.py)."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.appdef import ProcessType
from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler import eventstore
from scheduler.eventlog import (
    FOLLOWER_EVENTS,
    KINDS,
    MAX_BYTES,
    MAX_EVENTS,
    MAX_TEXT,
    Event,
    EventLog,
    TooManyFollowers,
    decode_events,
    listed,
    printable,
    scale_text,
)
from scheduler.placement import InstanceKey
from scheduler.push import LinkTimes
from scheduler.reconciler import Scheduler
from scheduler.records import AppEvent, Snapshot, decode
from scheduler.store import StoreUnavailable
from tests.memstore import MemStore


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def texts(log: EventLog, app: str = "a") -> list[str]:
    return [e.text for e in log.list(app)]


# ---- order, kinds, bounds ------------------------------------------------------------------

def test_events_are_kept_oldest_first_in_strictly_increasing_time():
    clock = Clock()
    log = EventLog(clock)
    log.add("a", "release", "v1 Deploy", "alice@laptop")
    clock.t -= 3600  # the wall clock steps back: the feed stays in order
    log.add("a", "scale", "web 1 → 3")
    log.add("b", "agent", "agent n1 down")
    events = log.list("a")
    assert [e.text for e in events] == ["v1 Deploy", "web 1 → 3"]
    assert events[0].time == 1_800_000_000.0 and events[1].time > events[0].time
    assert events[0].author == "alice@laptop" and events[1].author == ""
    assert log.list("nobody") == [] and "nobody" not in log._feeds  # reading makes nothing


def test_an_unknown_kind_is_a_bug():
    with pytest.raises(ValueError, match="kind"):
        EventLog(Clock()).add("a", "gossip", "x")


def test_the_newest_1000_events_are_kept():
    log = EventLog(Clock())
    for i in range(MAX_EVENTS + 500):
        log.add("a", "scale", f"e{i}")
    kept = texts(log)
    assert len(kept) == MAX_EVENTS and kept[0] == "e500" and kept[-1] == f"e{MAX_EVENTS + 499}"


def test_at_most_256_kib_of_json_are_kept():
    log = EventLog(Clock())
    for i in range(MAX_EVENTS):  # each text its 512 characters, each 2 bytes in UTF-8 ("é")
        log.add("a", "instance", f"{i:04d}" + "é" * 600, "x" * 300)
    data = log.encode("a")
    kept = decode_events(data)
    assert len(data) <= MAX_BYTES and 50 < len(kept) < MAX_EVENTS
    assert kept[-1].text.startswith(f"{MAX_EVENTS - 1:04d}") and len(kept[-1].text) == MAX_TEXT
    assert len(kept[-1].author) == 255


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.text(max_size=700),
                          st.text(max_size=300)), max_size=40))
def test_json_round_trip_and_bounds(adds):
    log = EventLog(Clock(), max_events=25, max_bytes=4096)
    for kind, text, author in adds:
        log.add("a", kind, text, author)
    data = log.encode("a")
    assert len(data) <= 4096 and decode_events(data) == log.list("a")
    assert json.loads(data) == [{"time": e.time, "kind": e.kind, "text": e.text,
                                 "author": e.author} for e in log.list("a")]
    assert len(log.list("a")) == min(len(adds), len(log.list("a"))) <= 25


# ---- texts: one printable line, cut ------------------------------------------------------

def test_texts_are_printable_and_cut():
    assert printable("web.1 crashed: exited with code 3") == "web.1 crashed: exited with code 3"
    assert printable("a\x00b\nc\td\x1b[31m\u202eé\x85\U000e0001") == \
        "a\\x00b\\x0ac\\x09d\\x1b[31m\\u202eé\\x85\\U000e0001"
    assert printable("x" * 513) == "x" * 511 + "…" and printable("x" * 512) == "x" * 512
    assert printable("x" * 10_000_000).endswith("…")  # reads only what it keeps
    cut = printable("y" * 508 + "\x00\x00")  # an escape is never cut in half
    assert cut == "y" * 508 + "…"


@given(st.text(), st.integers(1, 600))
def test_any_text_becomes_one_printable_line_within_the_limit(text, limit):
    out = printable(text, limit)
    assert out.isprintable() and len(out) <= limit
    whole = printable(text, 12 * len(text))  # every character escaped at most 10 long
    if len(whole) <= limit:
        assert out == whole and (out == text) == text.isprintable()
    else:
        assert out.endswith("…") and whole.startswith(out[:-1])


def test_a_lying_agents_reason_is_made_printable_and_cut():
    log = EventLog(Clock())
    log.add("a", "instance", "web.1 crashed: " + "\x07\x1b]52;c;aGk=\x07" * 200, "\x00")
    e = log.list("a")[0]
    assert e.text.isprintable() and len(e.text) == MAX_TEXT and e.text.endswith("…")
    assert e.author == "\\x00"


def test_scale_and_id_lists_read_well():
    assert scale_text({"web": 2}, {"web": 5, "worker": 1}) == "web 2 → 5, worker 0 → 1"
    assert scale_text({"web": 5}, {"web": 2}, undo=True) == "web 5 → 2 (undo)"
    assert listed(["web.10", "web.2", "worker.1"]) == "web.2, web.10, worker.1"
    assert listed([f"web.{i}" for i in range(1, 9)]) == \
        "web.1, web.2, web.3, web.4, web.5 and 3 more"


# ---- stored values -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    b"{}", b"not json", b'[{"time": NaN, "kind": "scale", "text": "x"}]',
    b'[{"time": 1, "kind": "gossip", "text": "x"}]', b'[{"time": 1, "kind": "scale"}]',
    b'[{"time": "1", "kind": "scale", "text": "x"}]', b"[1]",
    b'[{"time": true, "kind": "scale", "text": "x"}]'])
def test_an_undecodable_feed_is_logged_and_skipped(value, caplog):
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_events(value)
    snap = Snapshot()
    with caplog.at_level(logging.WARNING):
        decode(snap, ["apps", "a", "events"], value)
    assert snap.events == {} and "ignoring undecodable key apps/a/events" in caplog.text


def test_a_stored_feed_is_sorted_and_made_printable():
    value = json.dumps([{"time": 2, "kind": "scale", "text": "b\x1b"},
                        {"time": 1, "kind": "agent", "text": "a", "author": "\n"}]).encode()
    assert decode_events(value) == [Event(1.0, "agent", "a", "\\x0a"),
                                    Event(2.0, "scale", "b\\x1b")]


def test_restore_replaces_but_keeps_what_is_newer():
    clock = Clock()
    log = EventLog(clock)
    for i in range(3):
        clock.t += 1
        log.add("a", "scale", f"e{i}")
    written = decode_events(log.encode("a"))
    clock.t += 1
    log.add("a", "scale", "e3")  # after the write
    log.restore("a", written)    # the watch sees the write: nothing changes
    assert texts(log) == ["e0", "e1", "e2", "e3"]
    log.restore("a", [Event(0.5, "release", "other")])  # another writer's feed
    assert texts(log) == ["other", "e0", "e1", "e2", "e3"]
    log.restore("a", [Event(clock.t + 10, "release", "newest")])
    assert texts(log) == ["newest"]
    clock.t += 1
    log.add("a", "scale", "next")  # still after the newest time
    assert texts(log) == ["newest", "next"]
    log.forget("a")
    assert log.list("a") == [] and log.take_dirty() == []


# ---- followers -------------------------------------------------------------------------

async def test_a_follower_gets_new_events_and_is_told_what_it_missed():
    log = EventLog(Clock(), follower_events=3)
    log.add("a", "scale", "before")
    f = log.subscribe("a")
    for i in range(10):
        log.add("a", "scale", f"e{i}")
    log.add("b", "scale", "other app")
    got = [await asyncio.wait_for(f.get(), 1) for _ in range(3)]
    assert [(m, e.text) for m, e in got] == [(0, "e0"), (0, "e1"), (0, "e2")]
    assert f.take() is None
    log.add("a", "scale", "e10")
    missed, e = await asyncio.wait_for(f.get(), 1)
    assert (missed, e.text) == (7, "e10")  # e3..e9 went while it did not read
    waiter = asyncio.create_task(f.get())
    await asyncio.sleep(0)
    log.add("a", "scale", "e11")
    assert (await asyncio.wait_for(waiter, 1))[1].text == "e11"
    log.unsubscribe("a", f)
    log.add("a", "scale", "e12")
    assert f.take() is None and log._followers == {}


def test_a_follower_that_never_reads_costs_a_bounded_queue():
    log = EventLog(Clock())
    f = log.subscribe("a")
    for i in range(FOLLOWER_EVENTS * 3):
        log.add("a", "scale", f"e{i}")
    assert len(f.items) == FOLLOWER_EVENTS and f.missed == FOLLOWER_EVENTS * 2


def test_followers_are_bounded_per_app_and_in_all():
    log = EventLog(Clock(), max_followers=2, max_followers_total=3)
    a1, _ = log.subscribe("a"), log.subscribe("a")
    with pytest.raises(TooManyFollowers, match="2 followers"):
        log.subscribe("a")
    log.subscribe("b")
    with pytest.raises(TooManyFollowers, match="3 followers"):
        log.subscribe("c")
    log.unsubscribe("a", a1)
    log.subscribe("c")
    log.unsubscribe("zz", a1)  # unknown: nothing happens


# ---- persistence -----------------------------------------------------------------------

class FakeStore:
    """What eventstore uses of scheduler.store.Store."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.writes = 0
        self.down = False

    def key(self, *parts: str) -> bytes:
        return "/".join(("/formation", *parts)).encode()

    async def write(self, puts: dict[bytes, bytes]) -> dict[bytes, int]:
        if self.down:
            raise StoreUnavailable("etcd unavailable (test)")
        self.writes += 1
        self.values.update(puts)
        return dict.fromkeys(puts, self.writes)


async def test_feeds_are_written_in_batches_and_again_after_a_failure():
    store, log = FakeStore(), EventLog(Clock())
    seen: dict[str, int] = {}
    for i in range(100):  # a crash loop: many events, one write per app
        log.add("a", "instance", f"web.1 crashed {i}")
    log.add("b", "scale", "web 0 → 1")
    assert await eventstore.flush(store, log, seen.__setitem__)  # type: ignore[arg-type]
    assert store.writes == 2 and seen == {"a": 1, "b": 2}
    assert decode_events(store.values[b"/formation/apps/a/events"]) == log.list("a")
    assert await eventstore.flush(store, log, seen.__setitem__)  # type: ignore[arg-type]
    assert store.writes == 2  # nothing changed: nothing written
    store.down = True
    log.add("a", "scale", "web 1 → 2")
    assert not await eventstore.flush(store, log, seen.__setitem__)  # type: ignore[arg-type]
    assert log.changed.is_set()
    store.down = False
    assert await eventstore.flush(store, log, seen.__setitem__)  # type: ignore[arg-type]
    assert decode_events(store.values[b"/formation/apps/a/events"])[-1].text == "web 1 → 2"


async def test_keep_writes_at_most_once_an_interval():
    store, log = FakeStore(), EventLog(Clock())
    task = asyncio.create_task(eventstore.keep(store, log, lambda a, r: None,  # type: ignore
                                               interval=3600))
    try:
        log.add("a", "scale", "one")
        for _ in range(100):
            await asyncio.sleep(0)
        log.add("a", "scale", "two")
        for _ in range(100):
            await asyncio.sleep(0)
        assert store.writes == 1 and log.changed.is_set()  # "two" waits for the interval
    finally:
        task.cancel()


# ---- what the scheduler records --------------------------------------------------------

TYPES = {"web": ProcessType("web", "python3 web.py"), "worker": ProcessType("worker", "w")}


def kinds_texts(s: Scheduler, app: str = "a") -> list[tuple[str, str, str]]:
    return [(e.kind, e.text, e.author) for e in s.events.list(app)]


async def test_the_scheduler_records_releases_config_and_scales_with_their_authors():
    from scheduler import releases
    s = Scheduler(MemStore(), LinkTimes(agent_ttl=10, fence_after=0))  # type: ignore
    await s.deploy("a", TYPES, {"SECRET": "hunter2"}, author="alice@laptop")
    await s.new_release("a", lambda cur: releases.configured(cur, {"TOKEN": "s3cr3t"}, []),
                        "bob@desk")
    await s.new_release("a", lambda cur: releases.configured(cur, {"TOKEN": "s3cr3t"}, []),
                        "bob@desk")  # no change: no release, no event
    await s.scale("a", {"web": 3, "worker": 0}, author="carol@host")
    await s.scale("a", {"web": 3})  # no change: nothing
    await s.scale("a", {}, undo=True, author="carol@host")
    got = [k for k in kinds_texts(s) if k[0] != "rollout"]
    assert got == [("release", "v1 Deploy", "alice@laptop"),
                   ("config", "v2 Set TOKEN", "bob@desk"),
                   ("scale", "web 1 → 3", "carol@host"),
                   ("scale", "web 3 → 1 (undo)", "carol@host")]
    assert "hunter2" not in s.events.encode("a").decode()
    assert "s3cr3t" not in s.events.encode("a").decode()


async def test_the_scheduler_records_crashes_once_per_transition_and_agents_down_and_up():
    clock = [100.0]
    s = Scheduler(MemStore(), LinkTimes(agent_ttl=10, fence_after=0))  # type: ignore
    s.world.agents.clock = lambda: clock[0]
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    await s.agent_hello(pb.Hello(name="n2", capacity=10))
    await s.deploy("a", TYPES, {})
    await s.reconcile()
    web = InstanceKey("a", "web.1")
    home = s.world.assignments[web].agent
    other = "n2" if home == "n1" else "n1"

    def report(state: InstanceState, reason: str = "") -> None:
        s.agent_status(home, pb.InstanceStatus(app="a", id="web.1", release=1, state=state,
                                               reason=reason, pid=1))
    report(InstanceState.RUNNING)
    report(InstanceState.CRASHED, "exited with code 3\x1b[2J")
    report(InstanceState.CRASHED, "exited with code 3")  # repeated: no second event
    report(InstanceState.STARTING)
    report(InstanceState.UNHEALTHY, "http check: 500")
    s.agent_status(home, pb.InstanceStatus(app="zz", id="web.1", release=1,
                                           state=InstanceState.CRASHED))  # never assigned
    instance = [t for k, t, _ in kinds_texts(s) if k == "instance"]
    assert instance == [f"web.1 v1 crashed on {home}: exited with code 3\\x1b[2J",
                        f"web.1 v1 unhealthy on {home}: http check: 500"]
    assert s.events.list("zz") == []
    # its agent goes quiet: down, and web.1 moves
    await s.agent_hello(pb.Hello(name=other, capacity=10))  # stays alive
    clock[0] += 10.5
    s.agents.heartbeat(other)
    s.expire_agents()
    await s.reconcile()
    tail = [(k, t) for k, t, _ in kinds_texts(s)][-2:]
    assert tail == [("agent", f"agent {home} down: no heartbeat for 10s (web.1)"),
                    ("instance", f"web.1 moved from {home} to {other} ({home} down)")]
    # it comes back, saying it still runs web.1 (a partition): up again
    await s.agent_hello(pb.Hello(name=home, capacity=10, instances=[pb.InstanceStatus(
        app="a", id="web.1", release=1, state=InstanceState.RUNNING)]))
    assert kinds_texts(s)[-1] == ("agent", f"agent {home} up again (web.1)", "")


async def test_the_watch_takes_another_writers_feed_and_a_deleted_one():
    s = Scheduler(MemStore(), LinkTimes(agent_ttl=10, fence_after=0))  # type: ignore
    value = json.dumps([{"time": 5, "kind": "scale", "text": "from elsewhere"}]).encode()
    s.app_event(AppEvent("apps/a/events", value, 7))
    assert [e.text for e in s.events.list("a")] == ["from elsewhere"]
    s.events_written("a", 9)
    s.app_event(AppEvent("apps/a/events", b"[]", 8))  # older than what it wrote: skipped
    s.app_event(AppEvent("apps/a/events", b"garbage", 10))  # logged, skipped
    assert [e.text for e in s.events.list("a")] == ["from elsewhere"]
    s.app_event(AppEvent("apps/a/events", None, 11))
    assert s.events.list("a") == []
