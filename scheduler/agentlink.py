"""The AgentLink service: one bidirectional stream per agent.

Up: hello first, then heartbeats and instance status. Down: the agent's whole assignment list,
whenever it changes. The stream is a session; liveness is decided by heartbeats, not by it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from common.names import check_name
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.agents import AgentEntry, Session
from scheduler.errors import Rejected, answer
from scheduler.reconciler import Scheduler

log = logging.getLogger("scheduler.link")


class AgentLinkService(pbg.AgentLinkServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SchedulerMessage]:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
            return  # abort raises; this says so to mypy
        hello = first.hello

        async def register() -> tuple[AgentEntry, Session]:
            check_name("agent", hello.name)
            if hello.capacity < 0:
                raise Rejected("capacity must be >= 0")
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

    async def _read(self, entry: AgentEntry, messages: AsyncIterator[pb.AgentMessage],
                    outbox: asyncio.Queue) -> None:
        name = entry.record.name
        try:
            async for message in messages:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self.s.agent_heartbeat(name)
                    outbox.put_nowait(pb.SchedulerMessage(ack=message.heartbeat))
                elif kind == "statuses":
                    for status in message.statuses.items:
                        self.s.agent_status(name, status)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.put_nowait(None)  # the agent hung up: end the sending side too
