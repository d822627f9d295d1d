"""The agent's side of AgentLink (agent/link.py) against real grpc.aio servers of AgentLink in
the test's loop, on 127.0.0.1: lists of a deposed leader's epoch are ignored, a follower's
redirect is dialled at once (but a loop of them is not followed forever), and an address where
nothing listens is left at once for the next. Waits are polls with deadlines."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import cast

import grpc
import pytest
from prometheus_client import REGISTRY

from agent import link as link_module
from agent.link import CONNECT_TIMEOUT, MAX_REDIRECTS, SchedulerLink, _leader_of
from agent.supervisor import Supervisor
from common.limits import LEADER_KEY
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg


async def until(test: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll test until it holds (True) or timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while not test() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return bool(test())


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def stale_lists() -> float:
    return REGISTRY.get_sample_value("formation_agent_stale_lists_total") or 0.0


def assignments(epoch: int, n: int) -> pb.SchedulerMessage:
    """A list of one instance, web.<n>, from the leader of `epoch`."""
    item = pb.Assignment(app="shop", id=f"web.{n}", type="web", release=1)
    return pb.SchedulerMessage(assignments=pb.Assignments(
        items=[item], epoch=epoch, fence_after=float(n + 1), agent_ttl=30.0))


class FakeSupervisor:
    """What SchedulerLink uses of a Supervisor; records the lists applied (their ids)."""

    def __init__(self) -> None:
        self.applied: list[list[str]] = []
        self.on_status: Callable[[pb.InstanceStatus], None] = lambda status: None
        self.wait_contact: Callable[[], Awaitable[None]] | None = None

    def apply(self, items: list[pb.Assignment]) -> None:
        self.applied.append([item.id for item in items])

    def statuses(self) -> list[pb.InstanceStatus]:
        return []

    def fence(self, grace: float) -> list[str]:
        return []


class FakeScheduler(pbg.AgentLinkServicer):
    """AgentLink only. Leading, it sends what the test queues; with `redirect` set it reads
    the hello and refuses the call naming that address as the leader, as a follower does
    (scheduler/agentlink.py). `hellos` counts the calls that said hello."""

    def __init__(self) -> None:
        self.redirect: str | None = None
        self.hellos = 0
        self.queue: asyncio.Queue[pb.SchedulerMessage] = asyncio.Queue()
        self.server = grpc.aio.server()
        pbg.add_AgentLinkServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    async def Connect(self, requests: AsyncIterator[pb.AgentMessage],  # noqa: N802
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SchedulerMessage]:
        first = await anext(requests)
        assert first.WhichOneof("kind") == "hello" and first.hello.name == "a1"
        self.hellos += 1
        if self.redirect is not None:
            context.set_trailing_metadata(((LEADER_KEY, self.redirect),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader")
        reader = asyncio.create_task(self._drain(requests))  # heartbeats
        try:
            while True:
                yield await self.queue.get()
        finally:
            reader.cancel()

    async def _drain(self, requests: AsyncIterator[pb.AgentMessage]) -> None:
        async for _ in requests:
            pass


@pytest.fixture
async def schedulers() -> AsyncIterator[Callable[[], Awaitable[FakeScheduler]]]:
    """schedulers() -> a started FakeScheduler; all are stopped afterwards."""
    made: list[FakeScheduler] = []

    async def make() -> FakeScheduler:
        scheduler = FakeScheduler()
        made.append(scheduler)
        await scheduler.server.start()
        return scheduler
    yield make
    for scheduler in made:
        await scheduler.server.stop(0)


@pytest.fixture
def slow_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every backoff of the link 100 times longer (20 s at least): whatever happens within a
    second happened without one."""
    monkeypatch.setattr(link_module, "random", SimpleNamespace(uniform=lambda a, b: 100.0))
    yield


@contextlib.asynccontextmanager
async def running(addresses: list[str]) -> AsyncIterator[tuple[SchedulerLink, FakeSupervisor]]:
    """SchedulerLink.run() of an agent a1 as a task, cancelled (and awaited) at the end."""
    supervisor = FakeSupervisor()
    link = SchedulerLink(addresses, pb.Hello(name="a1", capacity=4),
                         cast(Supervisor, supervisor))
    assert supervisor.on_status == link.send_status  # the link hooks itself in
    task = asyncio.create_task(link.run())
    try:
        yield link, supervisor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()


# ---- epochs ------------------------------------------------------------------------------

async def test_a_list_of_an_older_epoch_is_ignored(schedulers):
    leader = await schedulers()
    stale = stale_lists()
    for n, epoch in enumerate((5, 3, 5, 7)):  # a deposed leader's list (3) in between
        leader.queue.put_nowait(assignments(epoch, n))
    async with running([leader.address]) as (link, supervisor):
        assert await until(lambda: len(supervisor.applied) == 3), supervisor.applied
        assert supervisor.applied == [["web.0"], ["web.2"], ["web.3"]]
        assert stale_lists() == stale + 1
        assert link.epoch == 7 and link.fence_after == 4.0 and link.connected
        assert leader.hellos == 1  # all on one stream

        leader.queue.put_nowait(assignments(6, 4))   # older again: ignored, counted
        leader.queue.put_nowait(assignments(7, 5))   # the same epoch: applied
        leader.queue.put_nowait(assignments(0, 6))   # no epoch at all is the oldest
        leader.queue.put_nowait(assignments(9, 7))
        assert await until(lambda: len(supervisor.applied) == 5), supervisor.applied
        assert supervisor.applied[3:] == [["web.5"], ["web.7"]]
        assert stale_lists() == stale + 3 and link.epoch == 9


async def test_the_newest_epoch_is_kept_across_reconnections(schedulers):
    """A list of the old leader's epoch on a new stream (it still serves, deposed) is
    ignored as well: the epoch belongs to the agent, not to the stream."""
    new, old = await schedulers(), await schedulers()
    new.queue.put_nowait(assignments(8, 0))
    old.queue.put_nowait(assignments(4, 1))
    old.queue.put_nowait(assignments(8, 2))
    stale = stale_lists()
    async with running([new.address, old.address]) as (link, supervisor):
        assert await until(lambda: supervisor.applied == [["web.0"]])
        await new.server.stop(0)  # the agent moves on to the next address
        assert await until(lambda: len(supervisor.applied) == 2), supervisor.applied
        assert supervisor.applied == [["web.0"], ["web.2"]] and old.hellos == 1
        assert stale_lists() == stale + 1 and link.epoch == 8


# ---- redirects ---------------------------------------------------------------------------

async def test_a_followers_redirect_is_dialled_at_once(schedulers, slow_backoff):
    leader, follower = await schedulers(), await schedulers()
    follower.redirect = leader.address
    leader.queue.put_nowait(assignments(2, 0))
    started = time.monotonic()
    async with running([follower.address]) as (link, supervisor):  # knows only the follower
        assert await until(lambda: supervisor.applied, timeout=1.0), \
            "the redirect was not followed at once"
        assert time.monotonic() - started < 1.0
        assert supervisor.applied == [["web.0"]] and link.epoch == 2
        assert follower.hellos == 1 and leader.hellos == 1


async def test_a_refused_session_leaves_no_task_behind(schedulers, caplog):
    leader, follower = await schedulers(), await schedulers()
    follower.redirect = leader.address
    leader.queue.put_nowait(assignments(2, 0))
    async with running([follower.address]) as (_, supervisor):
        assert await until(lambda: supervisor.applied)
        gc.collect()  # the refused session's leftovers, if any, are destroyed (and logged)
        destroyed = [r for r in caplog.records if "Task was destroyed" in r.getMessage()]
        assert not destroyed, destroyed[0].getMessage()

class Refusal:
    """What _leader_of reads of a grpc.aio.AioRpcError."""

    def __init__(self, metadata: object, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
                 ) -> None:
        self._metadata, self._code = metadata, code

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> object:
        return self._metadata


@pytest.mark.parametrize("address", [
    "10.0.0.2:7000", "leader.example.com:7000", "[::1]:7000", "h:0", "h:65535",
    "x" * 250 + ":7000",  # 255 characters
])
def test_a_usable_redirect_is_followed(address):
    assert _leader_of(Refusal(((LEADER_KEY, address),))) == address
    assert _leader_of(Refusal((("other", "x"), (LEADER_KEY, address)))) == address


@pytest.mark.parametrize("address", [
    "", "10.0.0.2", "10.0.0.2:", "h:port", "h:70000", "h:-1", "h:1 ", " h:1x",
    "h\x00:7000", "h\n:7000", "h:7000\r\n", "h\x7f:7000", "h\u200b:7000", "\u2028:1",
    "x" * 251 + ":7000", "x" * 10_000 + ":7000",  # longer than 255
    b"10.0.0.2:7000",  # a binary value: not an address
])
def test_a_hostile_redirect_is_ignored(address):
    assert _leader_of(Refusal(((LEADER_KEY, address),))) is None


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNKNOWN,
                                  grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK])
def test_only_an_unavailable_refusal_redirects(code):
    assert _leader_of(Refusal(((LEADER_KEY, "h:1"),), code)) is None


@pytest.mark.parametrize("metadata", [None, (), (("formation-leader-x", "h:1"),),
                                      (("Formation-Leader ", "h:1"),)])
def test_a_refusal_without_the_leaders_address_does_not_redirect(metadata):
    assert _leader_of(Refusal(metadata)) is None


async def test_a_redirect_loop_is_followed_a_few_times_then_backed_off(schedulers,
                                                                       slow_backoff):
    a, b = await schedulers(), await schedulers()
    a.redirect, b.redirect = b.address, a.address
    async with running([a.address]):
        # a (listed), then MAX_REDIRECTS redirects; the next one waits for the backoff
        assert await until(lambda: a.hellos + b.hellos >= MAX_REDIRECTS + 1, timeout=2.0)
        seen = time.monotonic()
        assert not await until(lambda: a.hellos + b.hellos > MAX_REDIRECTS + 1, timeout=0.5)
        assert time.monotonic() - seen >= 0.5
    assert (a.hellos, b.hellos) == ((MAX_REDIRECTS + 2) // 2, (MAX_REDIRECTS + 1) // 2)


async def test_a_redirect_loop_does_not_spin(schedulers):
    """With the link's own backoff: a few rounds of MAX_REDIRECTS + 1 calls in 1.5 s (its
    backoffs of 0.2, 0.4, 0.8 s...), where a spinning agent would make hundreds."""
    a, b = await schedulers(), await schedulers()
    a.redirect, b.redirect = b.address, a.address
    async with running([a.address]):
        deadline = time.monotonic() + 1.5
        # an observation window, not a synchronization: nothing is awaited but time
        assert not await until(lambda: a.hellos + b.hellos > 4 * (MAX_REDIRECTS + 1),
                               timeout=deadline - time.monotonic())
    assert MAX_REDIRECTS + 1 <= a.hellos + b.hellos <= 4 * (MAX_REDIRECTS + 1)
    assert abs(a.hellos - b.hellos) <= 1  # each round: a, b, a, b...


# ---- addresses ---------------------------------------------------------------------------

async def test_an_address_where_nothing_listens_is_left_at_once(schedulers):
    live = await schedulers()
    live.queue.put_nowait(assignments(1, 0))
    started = time.monotonic()
    async with running([f"127.0.0.1:{free_port()}", live.address]) as (link, supervisor):
        assert await until(lambda: live.hellos == 1, timeout=CONNECT_TIMEOUT)
        took = time.monotonic() - started
        assert took < CONNECT_TIMEOUT / 3, f"reached the second address after {took:.2f}s"
        assert await until(lambda: supervisor.applied == [["web.0"]])
        assert link.connected



async def test_only_older_epochs_for_an_agent_ttl_are_followed(schedulers):
    """etcd restored from an older snapshot: its revisions, and so the epochs, went back. A
    stream that sends only older epochs for a whole agent ttl is followed (no deposed leader
    acts that long: it stops within its lease), and the agent says so."""
    leader = await schedulers()
    first = assignments(9, 0)
    first.assignments.agent_ttl = 0.5
    leader.queue.put_nowait(first)
    async with running([leader.address]) as (link, supervisor):
        assert await until(lambda: supervisor.applied == [["web.0"]])
        stale = stale_lists()
        leader.queue.put_nowait(assignments(4, 1))  # ignored: the first older one
        assert await until(lambda: stale_lists() == stale + 1)
        assert supervisor.applied == [["web.0"]]

        async def resend() -> None:  # the restored leader's lists, as it sends them
            for n in range(2, 100):
                await asyncio.sleep(0.1)
                leader.queue.put_nowait(assignments(4, n))
        sender = asyncio.create_task(resend())
        try:
            assert await until(lambda: len(supervisor.applied) == 2, 5), supervisor.applied
            assert link.epoch == 4
        finally:
            sender.cancel()


def test_older_epochs_alone_for_a_ttl_are_followed_even_if_no_list_comes_then():
    """etcd restored from an older snapshot: the newest older list is applied at the first
    message after the ttl (a heartbeat's answer: a leader sends lists on change only), once;
    a list of the newest epoch meanwhile ends it."""
    from agent.link import StaleLists
    stale = StaleLists(10.0)
    new, old, older = pb.Assignments(epoch=9), pb.Assignments(epoch=5), pb.Assignments(epoch=4)
    assert stale.take(new, 0, 0.0) is new
    assert stale.take(older, 9, 1.0) is None
    assert stale.take(old, 9, 2.0) is None
    assert stale.take(None, 9, 10.9) is None
    assert stale.take(None, 9, 11.0) is old  # the newest of those held
    assert stale.take(None, 9, 30.0) is None  # once
    assert stale.take(old, 9, 40.0) is None
    assert stale.take(new, 9, 45.0) is new
    assert stale.take(None, 9, 60.0) is None
