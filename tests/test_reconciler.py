"""The scheduler without processes, sockets or etcd: its world, read models, guarded apply and
watch handling, driven through the same methods the gRPC services call, on an in-memory store."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import HealthCheck as HC
from hypothesis import given, settings
from hypothesis import strategies as st

from common.appdef import ProcessType
from common.states import AgentState, InstanceState
from proto import formation_pb2 as pb
from scheduler import readmodels
from scheduler import reconciler as reconciler_module
from scheduler.errors import Rejected
from scheduler.placement import Assigned, InstanceKey
from scheduler.push import LinkTimes
from scheduler.reconciler import Scheduler
from scheduler.records import AppEvent
from scheduler.world import runs_release
from tests.memstore import MemStore

TYPES = {"web": ProcessType("web", "python3 web.py"), "worker": ProcessType("worker", "w")}
AGENTS = ("n1", "n2", "n3")


def make() -> tuple[Scheduler, MemStore]:
    store = MemStore()
    return Scheduler(store, LinkTimes(agent_ttl=10, fence_after=0)), store  # type: ignore


def status(key: InstanceKey, state: InstanceState, release: int) -> pb.InstanceStatus:
    return pb.InstanceStatus(app=key.app, id=key.id, state=state, release=release, pid=1)


def last_list(s: Scheduler, name: str) -> list[str] | None:
    """The ids in the last list queued on the agent's session (it gets one at hello)."""
    session = s.agents.entries[name].session
    assert session is not None
    last = None
    while not session.outbox.empty():
        message = session.outbox.get_nowait()
        if message is not None and message.WhichOneof("kind") == "assignments":
            last = [f"{a.app}/{a.id}" for a in message.assignments.items]
    return last


def test_runs_release_is_running_on_that_release():
    k = InstanceKey("a", "web.1")
    assert runs_release(status(k, InstanceState.RUNNING, 2), 2)
    assert not runs_release(status(k, InstanceState.RUNNING, 1), 2)
    for state in InstanceState:
        if state != InstanceState.RUNNING:
            assert not runs_release(status(k, state, 2), 2)
    assert not runs_release(None, 2)


# ---- the read models always equal a recount ---------------------------------------------

def brute_running(s: Scheduler) -> Counter:
    out: Counter = Counter()
    for key, where in s.world.assignments.items():
        e = s.agents.entries.get(where.agent)
        r = e.report(key, where.release) if e is not None and not e.down else None
        if r is not None and r.state == InstanceState.RUNNING and r.release == where.release:
            out[(key.app, key.type)] += 1
    return out


def brute_rows(s: Scheduler, app: str = "") -> list[pb.Instance]:
    keys = {*s.world.assignments, *s.world.pending}
    for e in s.agents.entries.values():
        keys.update(e.reports)
    keys = {k for k in keys if not app or k.app == app}
    rows = [s.world.instance(k) for k in sorted(keys, key=lambda k: (k.app, k.type, k.number))]
    assert None not in rows  # every key the world holds has a row
    return [r for r in rows if r is not None]


def check_read_models(s: Scheduler) -> None:
    assert +s.read.running == +brute_running(s)
    for app in ("", "a", "b"):
        reply = pb.ListInstancesReply.FromString(s.read.instances(app))
        assert list(reply.instances) == brute_rows(s, app)
    for app in ("a", "b"):
        formation = s.read.formation(app)
        for t in formation.types:
            assert t.running == brute_running(s)[(app, t.type)]


OPS = st.one_of(
    st.tuples(st.just("deploy"), st.sampled_from("ab")),
    st.tuples(st.just("scale"), st.sampled_from("ab"), st.sampled_from(sorted(TYPES)),
              st.integers(0, 4)),
    st.tuples(st.just("hello"), st.sampled_from(AGENTS), st.integers(0, 6)),
    st.tuples(st.just("report"), st.sampled_from(AGENTS), st.integers(0, 20),
              st.sampled_from([InstanceState.RUNNING, InstanceState.STARTING,
                               InstanceState.STOPPED, InstanceState.CRASHED]),
              st.booleans()),
    st.tuples(st.just("stray"), st.sampled_from(AGENTS), st.sampled_from("ab")),
    st.tuples(st.just("expire"), st.sampled_from(AGENTS)),
    st.tuples(st.just("heartbeat"), st.sampled_from(AGENTS)),
    st.tuples(st.just("gone"), st.sampled_from(AGENTS)),
    st.tuples(st.just("drain"), st.sampled_from(AGENTS), st.booleans()),
    st.tuples(st.just("reconcile")),
)


async def apply(s: Scheduler, op: tuple) -> None:
    kind, *args = op
    entries = s.agents.entries
    if kind == "deploy":
        await s.deploy(args[0], TYPES, {})
    elif kind == "scale":
        try:
            await s.scale(args[0], {args[1]: args[2]})
        except Rejected:
            assert s.world.apps.current_release(args[0]) is None
    elif kind == "hello":
        name, capacity = args
        runs = [status(k, InstanceState.RUNNING, release)
                for k, release, _ in s.world.list_for(name)]
        await s.agent_hello(pb.Hello(name=name, capacity=capacity, instances=runs))
    elif kind == "report" and args[0] in entries:
        name, index, state, current = args
        items = s.world.list_for(name)
        if items:
            key, release, _ = items[index % len(items)]
            s.agent_status(name, status(key, state, release if current else release - 1))
    elif kind == "stray" and args[0] in entries:
        s.agent_status(args[0], status(InstanceKey(args[1], "web.9"), InstanceState.RUNNING, 1))
    elif kind == "expire" and args[0] in entries:
        entries[args[0]].deadline = 0
        s.expire_agents()
    elif kind == "heartbeat" and args[0] in entries:
        s.agent_heartbeat(args[0])
    elif kind == "gone" and args[0] in entries and (session := entries[args[0]].session) is not None:
        s.agent_gone(entries[args[0]], session)
    elif kind == "drain" and args[0] in entries:
        await s.drain(args[0], undo=args[1])
    elif kind == "reconcile":
        await s.reconcile()


# Every example starts from a busy world: two apps, agents with little room (so some instances
# are pending), instances placed and reported running; then the random part changes it.
PRELUDE = [("deploy", "a"), ("deploy", "b"), ("hello", "n1", 3), ("hello", "n2", 2),
           ("scale", "a", "worker", 3), ("scale", "b", "worker", 2), ("reconcile",),
           ("hello", "n1", 3), ("hello", "n2", 2)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HC.too_slow])
@given(st.lists(OPS, min_size=1, max_size=30))
def test_read_models_always_equal_a_recount(ops):
    async def run() -> None:
        s, _ = make()
        for op in PRELUDE:
            await apply(s, op)
        assert s.world.pending and sum(s.read.running.values()) == 5
        for op in ops:
            await apply(s, op)
            check_read_models(s)
        await s.reconcile()
        check_read_models(s)
        for name, entry in s.agents.entries.items():  # each connected agent has its list
            if entry.session is not None:
                want = [f"{k.app}/{k.id}" for k, _, _ in s.world.list_for(name)]
                assert last_list(s, name) == want
    asyncio.run(run())


async def one_web_running() -> tuple[Scheduler, InstanceKey]:
    """A scheduler with agent n1, app a deployed and its web.1 reported running on n1."""
    s, _ = make()
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    await s.deploy("a", TYPES, {})
    await s.reconcile()
    web = InstanceKey("a", "web.1")
    s.agent_status("n1", status(web, InstanceState.RUNNING, 1))
    return s, web


async def test_a_replaced_instance_reports_stopped_then_its_new_copy_and_both_count():
    s, web = await one_web_running()
    await s.deploy("a", TYPES, {"V": "2"})
    await s.reconcile()  # web.1 now on release 2: the agent stops the old copy, starts anew
    s.agent_status("n1", status(web, InstanceState.STOPPED, 1))
    s.agent_status("n1", status(web, InstanceState.STARTING, 2))
    s.agent_status("n1", status(web, InstanceState.RUNNING, 2))
    assert s.read.running[("a", "web")] == 1
    check_read_models(s)
    # Scaled to 0 before its agent ever reported it: its stop reports still count.
    await s.scale("a", {"worker": 1})
    await s.reconcile()
    await s.scale("a", {"worker": 0})
    await s.reconcile()
    w = InstanceKey("a", "worker.1")
    s.agent_status("n1", status(w, InstanceState.STOPPING, 2))
    assert s.agents.entries["n1"].reports[w][(2, 0)].state == InstanceState.STOPPING
    s.agent_status("n1", status(w, InstanceState.STOPPED, 2))
    s.agent_status("n1", status(w, InstanceState.RUNNING, 2))  # and now it lies
    assert w not in s.agents.entries["n1"].reports
    check_read_models(s)


# ---- apply is guarded; the loop survives ---------------------------------------------------

async def test_a_conflicting_write_is_reread_and_replanned():
    s, store = make()
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    await s.deploy("a", TYPES, {})
    await s.scale("a", {"worker": 2})
    await s.reconcile()
    w1 = InstanceKey("a", "worker.1")
    assert set(s.world.assignments) == {InstanceKey("a", "web.1"), w1, InstanceKey("a", "worker.2")}
    # Another writer removes worker.1 and puts web.1 on an agent this scheduler never saw.
    store.outside_write(w1, None)
    store.outside_write(InstanceKey("a", "web.1"), Assigned("ghost", 1))
    await s.scale("a", {"worker": 1})  # stop worker.2: its key is unchanged, but web.1's is not
    await s.scale("a", {"web": 0, "worker": 3})
    await s.reconcile()  # the first write conflicts; the re-read one lands
    assert store.snap.assignments == s.world.assignments
    assert set(s.world.assignments) == {w1, InstanceKey("a", "worker.2"),
                                        InstanceKey("a", "worker.3")}
    assert all(w.agent == "n1" for w in s.world.assignments.values())
    check_read_models(s)


async def test_etcd_failing_midway_makes_the_next_pass_reread(monkeypatch):
    s, store = make()
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    await s.deploy("a", TYPES, {})
    store.down = True
    with pytest.raises(reconciler_module.StoreUnavailable):
        await s.reconcile()
    store.down = False
    store.outside_write(InstanceKey("a", "web.1"), Assigned("n1", 1))  # "a batch landed"
    await s.reconcile()
    assert s.world.assignments == {InstanceKey("a", "web.1"): Assigned("n1", 1)}
    assert s.world.revisions == store.snap.assignment_revisions


async def test_the_loop_logs_an_unexpected_error_and_goes_on(monkeypatch, caplog):
    s, _ = make()
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    await s.deploy("a", TYPES, {})
    real, calls = reconciler_module.plan, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)
    monkeypatch.setattr(reconciler_module, "plan", flaky)
    monkeypatch.setattr(reconciler_module, "RETRY_ERROR", 0.01)
    loop = asyncio.create_task(s.run())
    try:
        async def placed() -> None:
            while InstanceKey("a", "web.1") not in s.world.assignments:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(placed(), 5)
    finally:
        loop.cancel()
    assert "reconcile failed" in caplog.text and "RuntimeError: a bug" in caplog.text


# ---- the watch: others' changes applied, own echoes and stale events skipped ----------------

async def test_the_watch_skips_own_writes_and_older_events_and_applies_newer_ones():
    s, store = make()
    await s.deploy("a", TYPES, {})
    await s.scale("a", {"worker": 3})
    rev = store.snap.app_revisions["apps/a/formation/worker"]
    s.wake.clear()
    s.app_event(AppEvent("apps/a/formation/worker", b"3", rev))      # its own echo
    s.app_event(AppEvent("apps/a/formation/worker", b"1", rev - 1))  # older than memory
    assert s.world.apps.formation[("a", "worker")] == 3
    assert not s.wake.is_set()  # nothing to do: no reconcile pass for an echo
    s.app_event(AppEvent("apps/a/formation/worker", b"5", rev + 10))  # another writer's
    assert s.world.apps.formation[("a", "worker")] == 5
    s.app_event(AppEvent("apps/a/formation/worker", None, rev + 11))
    assert ("a", "worker") not in s.world.apps.formation


async def test_deploy_then_scale_sees_its_own_write():
    s, _ = make()
    for i in range(20):
        app = f"app{i}"
        assert await s.deploy(app, TYPES, {}) == 1
        assert await s.scale(app, {"worker": 2}) == {"web": 1, "worker": 2}
        assert await s.deploy(app, TYPES, {"V": "2"}) == 2


async def test_drained_agent_with_nothing_left_says_drained():
    s, _ = make()
    await s.agent_hello(pb.Hello(name="n1", capacity=10))
    agent = await s.drain("n1", undo=False)
    assert agent.state == AgentState.DRAINED
    await s.deploy("a", TYPES, {})
    await s.drain("n1", undo=True)
    await s.reconcile()
    assert (await s.drain("n1", undo=False)).state == AgentState.DRAINING


# ---- pages and filters of ListInstances ------------------------------------------------------

def read_all(s: Scheduler, app: str = "", ptype: str = "", state: int = 0,
             size: int = 0) -> list[pb.Instance]:
    rows, token, pages = [], "", 0
    while True:
        reply = pb.ListInstancesReply.FromString(s.read.instances(app, ptype, state, size, token))
        rows.extend(reply.instances)
        pages += 1
        assert pages < 1000
        token = reply.next_page_token
        if not token:
            return rows


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.sampled_from(["", "a", "b"]), st.sampled_from(["", "web", "worker"]),
       st.sampled_from([0, InstanceState.RUNNING, InstanceState.PENDING]))
def test_pages_and_filters_give_exactly_the_matching_rows_in_order(size, app, ptype, state):
    async def run() -> None:
        s, _ = make()
        for op in PRELUDE:
            await apply(s, op)
        want = [r for r in brute_rows(s, app) if (not ptype or r.type == ptype)
                and (not state or r.state == state)]
        assert read_all(s, app, ptype, state, size) == want
    asyncio.run(run())


async def test_a_page_is_bounded_and_a_bad_token_is_refused(monkeypatch):
    s, _ = make()
    for op in PRELUDE:
        await apply(s, op)
    monkeypatch.setattr("scheduler.readmodels.PAGE_ROWS", 2)
    first = pb.ListInstancesReply.FromString(s.read.instances())
    assert len(first.instances) == 2 and first.next_page_token
    assert read_all(s) == brute_rows(s)
    for bad in ("x", "a/web/notanumber/web.1", "a/b/c"):
        with pytest.raises(ValueError):
            s.read.instances(token=bad)


async def test_distinct_list_requests_do_not_pile_up():
    s, _ = make()
    for op in PRELUDE:
        await apply(s, op)
    for n in range(1000):
        s.read.instances(token=f"a/web/{n}/web.{n}", page_size=n % 7)
    assert len(s.read._replies) <= readmodels.CACHED_REPLIES
    with pytest.raises(ValueError):
        s.read.instances(token="a/web/1/web.1" + "x" * readmodels.MAX_TOKEN)


async def test_rows_of_a_down_agent_say_lost_until_the_next_pass():
    s, web = await one_web_running()
    s.agents.entries["n1"].deadline = 0
    s.expire_agents()
    row = pb.ListInstancesReply.FromString(s.read.instances("a")).instances[0]
    assert (row.state, row.reason) == (InstanceState.LOST, "agent n1 is down")
    assert s.read.running[("a", "web")] == 0
    await s.reconcile()  # nowhere else to go: pending, no longer lost
    row = pb.ListInstancesReply.FromString(s.read.instances("a")).instances[0]
    assert row.state == InstanceState.PENDING and not row.agent
