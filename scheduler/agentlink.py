"""The AgentLink service: one bidirectional stream per agent.

Up: hello first, then heartbeats and instance status. Down: the agent's whole assignment list,
whenever it changes. The stream is a session; liveness is decided by heartbeats, not by it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from common.grpcserve import BadRequest
from common.names import check_name, split_instance_id
from common.states import InstanceState, is_instance_state
from common.tls import peer_identity
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.agents import AgentEntry, Session
from scheduler.errors import answer
from scheduler.reconciler import Scheduler

log = logging.getLogger("scheduler.link")
MAX_ADDRESS = 255               # characters of an agent's advertised addresses
MAX_CAPACITY = 100_000          # instance slots an agent may declare
MAX_HELLO_INSTANCES = 10_000    # instances an agent may say it runs when it connects
MAX_REASON = 1024               # characters of an instance status's reason


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


class AgentLinkService(pbg.AgentLinkServicer):
    def __init__(self, scheduler: Scheduler, tls: bool = False) -> None:
        self.s = scheduler
        self.tls = tls  # with TLS, an agent may say hello only under its certificate's name

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SchedulerMessage]:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
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

        async def register() -> tuple[AgentEntry, Session]:
            check_hello(hello)
            return await self.s.agent_hello(hello)
        entry, session = await answer(context, register)

        reader = asyncio.create_task(self._read(entry, request_iterator, session.outbox))
        try:
            while True:
                message = await session.outbox.get()
                if message is None:
                    break
                yield message
        finally:
            reader.cancel()
            self.s.agent_gone(entry, session)
        bad = reader.result() if reader.done() and not reader.cancelled() else None
        if bad is not None:
            raise bad  # a bad frame: answered by the handler's own task (common/grpcserve.py)

    async def _read(self, entry: AgentEntry, messages: AsyncIterator[pb.AgentMessage],
                    outbox: asyncio.Queue) -> BadRequest | None:
        """Take the agent's messages until it hangs up; a bad frame ends it, returned."""
        name = entry.record.name
        try:
            async for message in messages:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self.s.agent_heartbeat(name)
                    outbox.put_nowait(pb.SchedulerMessage(ack=message.heartbeat))
                elif kind == "statuses":
                    for status in message.statuses.items:
                        try:
                            check_status(status)
                        except ValueError as e:
                            self.s.ignore_report(name, str(e))
                            continue
                        self.s.agent_status(name, status)
        except BadRequest as e:
            return e
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.put_nowait(None)  # the agent hung up: end the sending side too
        return None
