"""The AgentLink service: one bidirectional stream per agent.

Up: hello first, then heartbeats and instance status. Down: the agent's whole assignment list,
whenever it changes. The stream is a session; liveness is decided by heartbeats, not by it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from common.grpcserve import BadRequest
from common.limits import LEADER_KEY, SILENCE_LIMIT
from common.names import check_name, split_instance_id
from common.states import InstanceState, is_instance_state
from common.tls import peer_identity
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.agents import AgentEntry, Session
from scheduler.errors import answer
from scheduler.peers import Peers
from scheduler.reconciler import Scheduler
from scheduler.replica import NoLeader, Replica

log = logging.getLogger("scheduler.link")
MAX_ADDRESS = 255               # characters of an agent's advertised addresses
MAX_CAPACITY = 100_000          # instance slots an agent may declare
MAX_HELLO_INSTANCES = 10_000    # instances an agent may say it runs when it connects
MAX_REASON = 1024               # characters of an instance status's reason
PARK = SILENCE_LIMIT - 1.0      # seconds a follower holds an agent's call for a leader


def check_status(s: pb.InstanceStatus) -> None:
    """An instance status names a valid app and instance id, and sane numbers."""
    check_name("app", s.app)
    split_instance_id(s.id)
    if not is_instance_state(s.state) or s.state in (InstanceState.UNSPECIFIED,
                                                      InstanceState.LOST):
        raise ValueError(f"{s.app}/{s.id}: invalid state {s.state}")
    if s.release < 0 or s.pid < 0 or not 0 <= s.port <= 65535 or s.restarts < 0:
        raise ValueError(f"{s.app}/{s.id}: invalid release, pid, port or restarts")
    if len(s.reason) > MAX_REASON:
        raise ValueError(f"{s.app}/{s.id}: reason longer than {MAX_REASON} characters")


def check_hello(h: pb.Hello) -> None:
    """Everything of a hello that reaches etcd or the world is bounded and valid."""
    check_name("agent", h.name)
    if not 0 <= h.capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity must be from 0 to {MAX_CAPACITY}")
    for what, value in (("address", h.address), ("metrics_address", h.metrics_address),
                        ("api_address", h.api_address), ("isolation", h.isolation)):
        if len(value) > MAX_ADDRESS or not value.isprintable():
            raise ValueError(f"{what} must be at most {MAX_ADDRESS} printable characters")
    if len(h.instances) > MAX_HELLO_INSTANCES:
        raise ValueError(f"a hello may list at most {MAX_HELLO_INSTANCES} instances")
    for status in h.instances:
        check_status(status)


async def _refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, why: str) -> None:
    """Abort the call, unless the agent hung up already (a garbage frame, then gone): gRPC's
    abort of a call that is over fails with an internal error it logs as a traceback."""
    if context.cancelled():
        return
    try:
        await context.abort(code, why)
    except grpc.aio.AbortError:
        raise
    except Exception:  # noqa: BLE001 - gRPC's ExecuteBatchError: the call ended meanwhile
        if not (context.cancelled() or context.done()):
            raise


class AgentLinkService(pbg.AgentLinkServicer):
    """Served by the leader; a follower sends each agent to it (`_send_to_leader`)."""

    def __init__(self, replica: Replica, peers: Peers, tls: bool = False) -> None:
        self.replica = replica
        self.peers = peers
        self.tls = tls  # with TLS, an agent may say hello only under its certificate's name

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SchedulerMessage]:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "hello":
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
            return  # abort raises; this says so to mypy
        hello = first.hello
        if self.tls:
            who = peer_identity(context)
            if who is None or who.role != "agent" or who.name != hello.name:
                log.warning("refused a hello as agent %r from %s (certificate of %s)",
                            hello.name[:64], context.peer(), who)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{who} may not connect as agent {hello.name[:64]!r}")
                return

        s = self.replica.current()
        if s is None:
            await self._send_to_leader(context)
            return

        async def register() -> tuple[AgentEntry, Session]:
            check_hello(hello)
            return await s.agent_hello(hello)
        entry, session = await answer(context, register)

        reader = asyncio.create_task(self._read(s, entry, request_iterator, session.outbox))
        try:
            while True:
                message = await session.outbox.get()
                if message is None or s.term_over:  # queued before the term ended: dropped
                    break
                yield message
        finally:
            reader.cancel()
            s.agent_gone(entry, session)
        bad = reader.result() if reader.done() and not reader.cancelled() else None
        if bad is not None:
            raise bad  # a bad frame: answered by the handler's own task (common/grpcserve.py)

    async def _send_to_leader(self, context: grpc.aio.ServicerContext) -> None:
        """This replica does not lead: hold the agent's call until a leader is known that
        this replica can reach (or it leads itself), then end it with the leader's address
        (LEADER_KEY), which the agent dials at once. Held for PARK at most, within the
        agent's own patience (SILENCE_LIMIT): then it tries its other addresses."""
        deadline = time.monotonic() + PARK
        while True:
            try:
                leader = await self.replica.wait_leader(deadline)
            except NoLeader as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
                return
            mine = leader.key == self.replica.election.me.key \
                if self.replica.election.me is not None else False
            left = deadline - time.monotonic()
            if mine or await self.peers.ready(leader.address, max(0.01, min(left, 0.5))):
                break
            if time.monotonic() >= deadline:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"the leader {leader.name} at {leader.address} cannot be "
                                    "reached from here")
                return
        context.set_trailing_metadata(((LEADER_KEY, leader.address),))
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            f"not the leader: {leader.name} at {leader.address} leads")

    async def _read(self, s: Scheduler, entry: AgentEntry,
                    messages: AsyncIterator[pb.AgentMessage],
                    outbox: asyncio.Queue) -> BadRequest | None:
        """Take the agent's messages until it hangs up; a bad frame ends it, returned."""
        name = entry.record.name
        try:
            async for message in messages:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    s.agent_heartbeat(name)
                    if s.times.leads():  # contact means the leader's, not a deposed one's
                        outbox.put_nowait(pb.SchedulerMessage(ack=message.heartbeat))
                elif kind == "statuses":
                    for status in message.statuses.items:
                        try:
                            check_status(status)
                        except ValueError as e:
                            s.ignore_report(name, str(e))
                            continue
                        s.agent_status(name, status)
        except BadRequest as e:
            return e
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.put_nowait(None)  # the agent hung up: end the sending side too
        return None
