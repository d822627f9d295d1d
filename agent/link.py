"""The agent's side of AgentLink: dial, say hello, heartbeat, report, take assignment lists.

The link never stops instances because the scheduler is gone (availability first, docs/failure-model.md):
it reconnects with backoff and lets the next list decide. It does fence at_most_once instances
once `fence_after` passes without any word from the scheduler.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

import grpc

from agent.instruments import STALE_LISTS
from agent.supervisor import Supervisor
from common.aio import wait_event
from common.identity import role_host
from common.limits import (
    AGENT_REDIAL_MAX,
    HEARTBEAT,
    LEADER_KEY,
    MAX_LIST_BYTES,
    SILENCE_LIMIT,
)
from common.net import split_hostport
from common.tls import Credentials, target
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg

log = logging.getLogger("agent")


DEFAULT_AGENT_TTL = 10.0  # before a list has said the scheduler's
CONNECT_TIMEOUT = 3.0  # seconds for a scheduler to complete a connection (TLS included)
MAX_REDIRECTS = 3  # followers' redirects followed in a row before the backoff applies again


def _leader_of(e: grpc.aio.AioRpcError) -> str | None:
    """The leader's address a follower's refusal names, if it names a usable one."""
    if e.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    for key, value in e.trailing_metadata() or ():
        if key == LEADER_KEY and isinstance(value, str) and len(value) <= 255 \
                and value.isprintable():
            try:
                split_hostport(value)
            except ValueError:
                return None
            return value
    return None


async def _connected(channel: grpc.aio.Channel) -> None:
    """Return once the channel is connected; ConnectionError at once if it failed (a
    refused connection: the next address is tried without waiting)."""
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionError("cannot connect")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


# A list may be large (many instances, each release's env once): well past gRPC's default 4 MiB.
LINK_OPTIONS = [("grpc.max_receive_message_length", MAX_LIST_BYTES)]


def with_env(lists: pb.Assignments) -> list[pb.Assignment]:
    """The list's items, each with its release's env (sent once per release in `envs`)."""
    envs = {(e.app, e.release): e.env for e in lists.envs}
    items = list(lists.items)
    for item in items:
        env = envs.get((item.app, item.release))
        if env is not None and not item.env:
            item.env.update(env)
    return items


class StaleLists:
    """Which list to apply, given lists of an older epoch than the newest seen are ignored.

    Once a stream has sent only older epochs for a whole agent ttl, the newest of them is
    applied - even if nothing new comes then (the scheduler sends a list on change only, so
    the check runs on every message, heartbeat answers included): no deposed leader acts that
    long (it stops within its lease), so etcd's revisions went back - restored from an older
    snapshot."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.since: float | None = None   # since when the stream sent only older epochs
        self.held: pb.Assignments | None = None  # the newest of them

    def take(self, lists: pb.Assignments | None, epoch: int, now: float
             ) -> pb.Assignments | None:
        """The list to apply now, if any: `lists` (just received, or None) unless it is older
        than `epoch`; the held one once older epochs alone came for a ttl."""
        if lists is not None and lists.epoch >= epoch:
            self.since = self.held = None
            return lists
        if lists is not None:
            self.since = self.since or now
            self.held = lists
        if self.held is None or self.since is None or now - self.since < self.ttl:
            return None
        log.warning("lists of epoch %d only, for %.0fs: etcd was restored from an older "
                    "snapshot; following them", self.held.epoch, now - self.since)
        held, self.since, self.held = self.held, None, None
        return held


class SchedulerLink:
    def __init__(self, addresses: list[str], hello: pb.Hello, supervisor: Supervisor,
                 on_contact: Callable[[float], None] = lambda deadline: None,
                 tls: Credentials | None = None) -> None:
        self.addresses = addresses
        self.tls = tls  # each dial takes the certificate as its files are then
        self.hello = hello
        self.supervisor = supervisor
        self.outbox: asyncio.Queue[pb.AgentMessage | None] | None = None
        self.connected = False
        self.last_contact = time.monotonic()
        self.contact = asyncio.Event()  # set by every message from the scheduler
        self.fence_after = 0.0          # learnt from the scheduler with each list
        self.agent_ttl = 0.0
        self.epoch = 0                  # the newest leader's epoch seen in a list
        self._call: grpc.aio.StreamStreamCall | None = None
        self.holding = False  # an upgrade is under way: lists are kept, not applied
        self._held: list[pb.Assignment] | None = None
        self._pending: list[pb.InstanceStatus] = []
        self.on_contact = on_contact  # tells the guardian (deadline for its own fencing)
        supervisor.on_status = self.send_status
        supervisor.wait_contact = self.wait_contact

    def handover(self) -> dict[str, float]:
        """What an agent upgrade hands over (agent/handover.py): fencing goes on across it."""
        return {"epoch": self.epoch, "fence_after": self.fence_after,
                "agent_ttl": self.agent_ttl, "last_contact": self.last_contact}

    def adopt(self, state: dict[str, float]) -> None:
        self.epoch = int(state["epoch"])
        self.fence_after, self.agent_ttl = float(state["fence_after"]), float(state["agent_ttl"])
        self.last_contact = float(state["last_contact"])

    def hold(self) -> None:
        """Keep the lists that come, unapplied, while everything else goes on (heartbeats,
        reports, fencing): an upgrade settles meanwhile (agent/upgrade.py)."""
        self.holding = True

    def release(self) -> None:
        """Apply the last list held, if any (the upgrade was given up)."""
        self.holding = False
        if self._held is not None:
            items, self._held = self._held, None
            self.supervisor.apply(items)

    def send_status(self, status: pb.InstanceStatus) -> None:
        """Queue a status; all those of one turn of the loop go out as one message."""
        if self.outbox is None:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush_statuses, self.outbox)
        self._pending.append(status)

    def _flush_statuses(self, outbox: asyncio.Queue) -> None:
        items, self._pending = self._pending, []
        if outbox is self.outbox and items:
            outbox.put_nowait(pb.AgentMessage(statuses=pb.StatusBatch(items=items)))

    def in_contact(self) -> bool:
        return not self.fence_after or time.monotonic() - self.last_contact <= self.fence_after

    async def wait_contact(self) -> None:
        """Return once the scheduler has spoken within fence_after."""
        while not self.in_contact():
            self.contact.clear()
            await self.contact.wait()

    def guardian_deadline(self) -> float:
        """Silence after which the guardian kills at_most_once groups itself: after the agent's
        own graceful fence, before the scheduler may place them elsewhere."""
        if not self.fence_after:
            return 0.0
        return self.fence_after + 0.75 * (self.agent_ttl - self.fence_after)

    async def fence(self) -> None:
        """Stop at_most_once instances once `fence_after` passes without a word from the
        scheduler, which moves them only after `agent_ttl`: never two copies at once."""
        while True:
            self.contact.clear()
            # From the last word, which may be older than this task (handed over by an upgrade).
            left = self.last_contact + self.fence_after - time.monotonic()
            if await wait_event(self.contact, max(0.0, left) if self.fence_after else None):
                continue
            fenced = self.supervisor.fence(grace=max(0.1, (self.agent_ttl - self.fence_after) / 2))
            if fenced:
                log.warning("no word from the scheduler for %.1fs: stopped at_most_once "
                            "instances %s", self.fence_after, ", ".join(fenced))
                if self._call is not None:  # redial, so the next list says what to run
                    self._call.cancel()
            await self.contact.wait()

    async def run(self) -> None:
        attempt, redirects, index = 0, 0, 0
        leader: str | None = None  # where a follower said the leader is: dialled next
        while True:
            address = leader or self.addresses[index % len(self.addresses)]
            leader = None
            try:
                await self._session(address)
            except grpc.aio.AioRpcError as e:
                leader = _leader_of(e)
                if leader is not None and redirects < MAX_REDIRECTS:
                    redirects += 1
                    log.info("scheduler %s does not lead: dialling the leader at %s", address,
                             leader)
                    continue  # at once: the follower held the call until a leader was known
                leader = None
                if self.connected or attempt % 10 == 0:
                    log.warning("scheduler %s: %s", address, e.details() or e.code().name)
            except TimeoutError:
                log.warning("scheduler %s %s; reconnecting", address,
                            "went silent" if self.connected else "did not answer")
            except ConnectionError as e:
                if attempt % 10 == 0:
                    log.warning("scheduler %s: %s", address, e)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._call is not None or (task is not None and task.cancelling()):
                    raise
                # our own cancel() of the call after fencing: redial
            if self.addresses[index % len(self.addresses)] == address:
                index += 1  # the next try goes to the next address, not the one that failed
            if self.connected:
                attempt = 0
            self.connected = False
            redirects = 0
            attempt += 1
            delay = min(0.1 * 2 ** min(attempt, 6), AGENT_REDIAL_MAX)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _session(self, address: str) -> None:
        outbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        hello = pb.Hello()
        hello.CopyFrom(self.hello)
        hello.instances.extend(self.supervisor.statuses())
        outbox.put_nowait(pb.AgentMessage(hello=hello))

        async def outgoing() -> AsyncIterator[pb.AgentMessage]:
            while True:
                message = await outbox.get()
                if message is None:
                    return
                yield message

        async with self._channel(address) as channel:
            # A scheduler that accepts connections but never answers (frozen, overloaded)
            # is left for the next address after CONNECT_TIMEOUT, not SILENCE_LIMIT.
            await asyncio.wait_for(_connected(channel), CONNECT_TIMEOUT)
            call = self._call = pbg.AgentLinkStub(channel).Connect(outgoing())
            self.outbox = outbox
            beats = asyncio.create_task(self._heartbeats(outbox))
            stale = StaleLists(self.agent_ttl or DEFAULT_AGENT_TTL)
            try:
                while True:
                    message = await asyncio.wait_for(call.read(), SILENCE_LIMIT)
                    if message is grpc.aio.EOF:
                        log.warning("scheduler %s closed the link", address)
                        return
                    self.last_contact = time.monotonic()
                    self.contact.set()
                    self.on_contact(self.guardian_deadline())
                    if not self.connected:
                        self.connected = True
                        log.info("connected to scheduler %s", address)
                    lists = message.assignments if message.WhichOneof("kind") == "assignments" \
                        else None
                    chosen = stale.take(lists, self.epoch, self.last_contact)
                    if lists is not None and chosen is None:  # a deposed leader's, it seems
                        STALE_LISTS.inc()
                        log.warning("ignored a list of epoch %d from %s: the newest leader "
                                    "seen is of epoch %d", lists.epoch, address, self.epoch)
                    if chosen is not None:
                        self.epoch = chosen.epoch
                        self.fence_after, self.agent_ttl = chosen.fence_after, chosen.agent_ttl
                        stale.ttl = self.agent_ttl or DEFAULT_AGENT_TTL
                        if self.holding:
                            self._held = with_env(chosen)
                        else:
                            self.supervisor.apply(with_env(chosen))
            finally:
                self._call = None
                self.outbox = None
                outbox.put_nowait(None)  # ends outgoing(): no request task left pending
                beats.cancel()
                call.cancel()

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=LINK_OPTIONS)
        # Whatever address was dialled, the peer must hold a scheduler's certificate.
        return grpc.aio.secure_channel(address, self.tls.channel_credentials(),
                                       options=LINK_OPTIONS + target(role_host("scheduler")))

    async def _heartbeats(self, outbox: asyncio.Queue) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            outbox.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat()))
