"""Logs of instances for ctl: fan out to every live agent's AgentApi, merge by time.

History (`tail`) is merged across agents and cut to the last N lines overall; with `follow`,
new lines are forwarded as they arrive from any agent. Agents are only ever dialled by the
scheduler, so ctl needs no route to them.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.agents import AgentTable

log = logging.getLogger("scheduler.logs")


class AgentChannels:
    """One gRPC channel per agent API address, reused across requests."""

    def __init__(self) -> None:
        self.channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> pbg.AgentApiStub:
        channel = self.channels.get(address)
        if channel is None:
            channel = self.channels[address] = grpc.aio.insecure_channel(address)
        return pbg.AgentApiStub(channel)


async def stream_logs(table: AgentTable, channels: AgentChannels, request: pb.LogsRequest
                      ) -> AsyncIterator[pb.LogLine]:
    agents = [e.record for e in table.entries.values()
              if not e.down and e.session is not None and e.record.api_address]
    history_req = pb.LogsRequest(app=request.app, selector=request.selector, tail=request.tail)
    history: list[pb.LogLine] = []

    async def read_history(address: str) -> None:
        try:
            async for line in channels.stub(address).Logs(history_req, timeout=10):
                history.append(line)
        except grpc.aio.AioRpcError as e:
            log.info("logs from %s: %s", address, e.code().name)

    await asyncio.gather(*(read_history(a.api_address) for a in agents))
    history.sort(key=lambda line: line.time)
    for line in history[-request.tail:] if request.tail > 0 else []:
        yield line
    if not request.follow:
        return

    queue: asyncio.Queue[pb.LogLine] = asyncio.Queue(maxsize=10_000)
    follow_req = pb.LogsRequest(app=request.app, selector=request.selector, follow=True)

    async def follow(address: str) -> None:
        try:
            async for line in channels.stub(address).Logs(follow_req):
                if not queue.full():
                    queue.put_nowait(line)
        except grpc.aio.AioRpcError as e:
            log.info("following logs of %s ended: %s", address, e.code().name)

    tasks = [asyncio.create_task(follow(a.api_address)) for a in agents]
    try:
        while True:
            yield await queue.get()
    finally:
        for t in tasks:
            t.cancel()
