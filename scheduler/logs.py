"""Logs of instances for ctl: fan out to every live agent's AgentApi, merge by time.

History (`tail`, at most MAX_TAIL lines) is merged across agents and cut to the last N lines
overall; with `follow`, new lines are forwarded as they arrive from any agent. Agents are only
ever dialled by the scheduler, so ctl needs no route to them.

Each follower has a queue bounded in lines and bytes (FOLLOWER_LINES, FOLLOWER_BYTES): while
it reads too slowly (a paused `ctl logs -f | less`), the lines that do not fit are dropped
and counted, and the next line it gets carries the count in `missed`, added to what the agents
had to drop for us. It is not cut off: its cost is bounded, and it goes on where it can.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator

import grpc
from prometheus_client import Counter

from common.identity import role_host
from common.tls import Credentials, target
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.agents import AgentTable

log = logging.getLogger("scheduler.logs")

MAX_TAIL = 100_000         # most lines of history a request may ask for; more: INVALID_ARGUMENT
FOLLOWER_LINES = 10_000    # lines queued for one ctl follower, at most ...
FOLLOWER_BYTES = 4 << 20   # ... and bytes; beyond, dropped and told to it as `missed`
MAX_CHANNELS = 4096        # agent API channels kept open; the oldest is dropped beyond
LINE_COST = 128            # bytes a queued line is counted for besides its text
RELEASE_OUTPUT_LINES = 20  # last lines of a release phase's output copied into its events
FOLLOW_RETRY = 0.2         # seconds before following an agent again whose stream ended ...
FOLLOW_RETRY_MAX = 5.0     # ... doubling up to this while it fails
RESUME_TAIL = 1000         # lines of history asked for then, to fill the gap

DROPPED_LINES = Counter("formation_log_follower_lines_dropped",
                        "Log lines dropped because a follower (ctl logs -f) read too slowly.")
DROPPED_BYTES = Counter("formation_log_follower_bytes_dropped",
                        "Bytes of log lines dropped because a follower read too slowly.")


class AgentChannels:
    """One gRPC channel per agent (name and API address), reused across requests.

    With TLS, the scheduler shows its own certificate and checks that the agent's is the
    certificate of that very agent (`NAME.agent.formation`), whatever address it advertised.
    When the scheduler's certificate files change, the channels are opened anew with the new
    one (open streams keep theirs)."""

    def __init__(self, tls: Credentials | None = None) -> None:
        self.tls = tls
        self.version = tls.version if tls else 0
        self.channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    def stub(self, name: str, address: str) -> pbg.AgentApiStub:
        if self.tls is not None:
            self.tls.reload()  # the files may have changed since the last request
            if self.tls.version != self.version:
                # Not closed: that would cancel the streams on them. A dropped channel is
                # freed with its last call.
                self.version = self.tls.version
                self.channels = {}
        key = (name, address)
        channel = self.channels.get(key)
        if channel is None:
            if len(self.channels) >= MAX_CHANNELS:  # agents come and go by the thousand
                self.channels.pop(next(iter(self.channels)))
            if self.tls is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                channel = grpc.aio.secure_channel(address, self.tls.channel_credentials(),
                                                  options=target(role_host("agent", name)))
            self.channels[key] = channel
        return pbg.AgentApiStub(channel)


class Follower:
    """One follower's queue of lines, bounded in lines and bytes; see the module's doc."""

    def __init__(self, lines: int = FOLLOWER_LINES, nbytes: int = FOLLOWER_BYTES) -> None:
        self.max_lines, self.max_bytes = lines, nbytes
        self.items: collections.deque[pb.LogLine] = collections.deque()
        self.size = 0
        self.missed = 0  # lines dropped (here or by an agent) since the last one queued
        self.ready = asyncio.Event()

    def put(self, line: pb.LogLine) -> bool:
        cost = len(line.text) + LINE_COST
        if len(self.items) >= self.max_lines or self.size + cost > self.max_bytes:
            self.missed += 1 + line.missed
            DROPPED_LINES.inc()
            DROPPED_BYTES.inc(len(line.text))
            return False
        line.missed += self.missed
        self.missed = 0
        self.items.append(line)
        self.size += cost
        self.ready.set()
        return True

    async def get(self) -> pb.LogLine:
        while not self.items:  # each pass waits for a put
            self.ready.clear()
            await self.ready.wait()
        line = self.items.popleft()
        self.size -= len(line.text) + LINE_COST
        return line


class Seen:
    """The newest line passed on from one agent: its time, and the lines of that very time
    (two lines may share one)."""

    def __init__(self) -> None:
        self.time: float | None = None
        self.at: set[tuple[str, str]] = set()

    def saw(self, line: pb.LogLine) -> None:
        if line.time != self.time:
            self.time, self.at = line.time, set()
        self.at.add((line.instance, line.text))

    def before(self, line: pb.LogLine) -> bool:
        """Was it passed on already (by its time, or as one of the newest's)?"""
        assert self.time is not None
        return line.time < self.time or \
            (line.time == self.time and (line.instance, line.text) in self.at)


async def stream_logs(table: AgentTable, channels: AgentChannels, request: pb.LogsRequest
                      ) -> AsyncIterator[pb.LogLine]:
    agents = [e.record for e in table.entries.values()
              if not e.down and e.session is not None and e.record.api_address]
    tail = max(0, min(request.tail, MAX_TAIL))  # the Control service refuses more
    history_req = pb.LogsRequest(app=request.app, selector=request.selector, tail=tail)
    history: list[pb.LogLine] = []

    async def read_history(name: str, address: str) -> None:
        try:
            async for line in channels.stub(name, address).Logs(history_req, timeout=10):
                history.append(line)
        except grpc.aio.AioRpcError as e:
            log.info("logs from %s: %s", address, e.code().name)

    await asyncio.gather(*(read_history(a.name, a.api_address) for a in agents))
    history.sort(key=lambda line: line.time)
    seen = {a.name: Seen() for a in agents}  # per agent: where a resumed stream goes on from
    for line in history:
        if line.agent in seen:
            seen[line.agent].saw(line)
    for line in history[-tail:] if tail > 0 else []:
        yield line
    history.clear()  # not held while following
    if not request.follow:
        return

    queue = Follower()
    follow_req = pb.LogsRequest(app=request.app, selector=request.selector, follow=True)

    async def follow(name: str, address: str) -> None:
        """Follow one agent. A stream that ends while its agent is not down (it upgraded in
        place, restarted, or its connection broke) is followed again, from the line after the
        last one seen (the gap's lines come from its history, RESUME_TAIL at most; if none
        was seen from it yet, from now on)."""
        request, delay, mark = follow_req, FOLLOW_RETRY, seen[name]
        while True:
            resuming = request is not follow_req and mark.time is not None
            try:
                async for line in channels.stub(name, address).Logs(request):
                    if resuming and mark.before(line):
                        continue  # history already passed on
                    resuming = False  # the rest is new, even if the agent's clock steps back
                    mark.saw(line)
                    queue.put(line)
                    delay = FOLLOW_RETRY
            except grpc.aio.AioRpcError as e:
                log.info("following logs of %s ended: %s", address, e.code().name)
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    return  # not a stream that broke: asking again would get the same
            await asyncio.sleep(delay)
            delay = min(2 * delay, FOLLOW_RETRY_MAX)
            entry = table.entries.get(name)
            if entry is None or entry.down or not entry.record.api_address:
                return
            address = entry.record.api_address
            request = pb.LogsRequest(app=request.app, selector=request.selector, follow=True,
                                     tail=RESUME_TAIL if mark.time is not None else 0)

    tasks = [asyncio.create_task(follow(a.name, a.api_address)) for a in agents]
    try:
        while True:  # until ctl goes away (the call is cancelled)
            yield await queue.get()
    finally:
        for t in tasks:
            t.cancel()


async def last_lines(table: AgentTable, channels: AgentChannels, app: str, instance: str,
                     agent: str, n: int) -> list[pb.LogLine]:
    """The last n lines of one instance from one agent ([] if it cannot say, in 10 s)."""
    entry = table.entries.get(agent)
    if entry is None or entry.down or not entry.record.api_address:
        return []
    request = pb.LogsRequest(app=app, selector=instance, tail=n)
    lines: list[pb.LogLine] = []
    try:
        async for line in channels.stub(agent, entry.record.api_address).Logs(request,
                                                                               timeout=10):
            lines.append(line)
    except grpc.aio.AioRpcError as e:
        log.info("logs of %s/%s from %s: %s", app, instance, agent, e.code().name)
    return lines[-n:]
