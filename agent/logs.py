"""Instance output: split into lines, kept in a bounded buffer per instance, written to the
agent's stdout as `HH:MM:SS web.3 | line` (logs are event streams), and streamed to followers.

Nothing here can block the agent or grow without bound:
- each instance may log LINE_RATE lines a second (bursts of LINE_BURST); beyond that its output
  is read and dropped without being split, and the pipe is left to fill for a moment, which
  slows the flooding child instead of the agent;
- lines are cut at MAX_LINE bytes; each instance keeps its last KEEP lines;
- the stdout queue and each follower's queue have a fixed size; lines beyond are dropped.
Every dropped line is counted.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 16 * 1024
KEEP = 1000
LINE_RATE = 2000.0
LINE_BURST = 5000.0


@dataclass(frozen=True)
class LogLine:
    time: float
    app: str
    instance: str
    text: str


Match = Callable[[LogLine], bool]


class LogSink:
    """Fan-in of every instance's lines: stdout, a ring buffer per instance, followers."""

    def __init__(self, out: BinaryIO | None = None, queue_size: int = 10_000, keep: int = KEEP):
        self.out = out if out is not None else sys.stdout.buffer
        self.queue: collections.deque[LogLine] = collections.deque()
        self.queue_size = queue_size
        self.keep = keep
        self.buffers: dict[tuple[str, str], collections.deque[LogLine]] = {}
        self.followers: list[tuple[Match, asyncio.Queue[LogLine]]] = []
        self.dropped = 0
        self.ready = asyncio.Event()

    def line(self, app: str, instance: str, text: str) -> None:
        entry = LogLine(time.time(), app, instance, text)
        buf = self.buffers.get((app, instance))
        if buf is None:
            buf = self.buffers[(app, instance)] = collections.deque(maxlen=self.keep)
        buf.append(entry)
        for match, queue in self.followers:
            if match(entry):
                if queue.full():
                    self.dropped += 1
                else:
                    queue.put_nowait(entry)
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
            return
        self.queue.append(entry)
        self.ready.set()

    def drop(self, n: int) -> None:
        self.dropped += n

    def forget(self, app: str, instance: str) -> None:
        self.buffers.pop((app, instance), None)

    def history(self, match: Match, tail: int) -> list[LogLine]:
        """The last `tail` buffered lines that match, oldest first."""
        if tail <= 0:
            return []
        lines = [e for buf in self.buffers.values() for e in buf if match(e)]
        lines.sort(key=lambda e: e.time)
        return lines[-tail:]

    def follow(self, match: Match, size: int = 10_000) -> asyncio.Queue[LogLine]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=size)
        self.followers.append((match, queue))
        return queue

    def unfollow(self, queue: asyncio.Queue[LogLine]) -> None:
        self.followers = [(m, q) for m, q in self.followers if q is not queue]

    def _take(self, limit: int) -> bytes:
        batch: list[str] = []
        while self.queue and len(batch) < limit:
            e = self.queue.popleft()
            stamp = time.strftime("%H:%M:%S", time.localtime(e.time))
            batch.append(f"{stamp} {e.instance} | {e.text}\n")
        return "".join(batch).encode("utf-8", "replace")

    async def run(self) -> None:
        """Write queued lines to stdout in batches; runs for the agent's life."""
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            self.ready.clear()
            data = self._take(2000)
            if self.queue:
                self.ready.set()
            # A slow reader of our stdout must not stall the event loop: write off-loop.
            await loop.run_in_executor(None, self._write, data)

    def flush(self) -> None:
        """Write whatever is queued, now (at exit)."""
        self._write(self._take(len(self.queue)))

    def _write(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass


def _text(raw: bytes) -> str:
    return raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")


async def pump(stream: asyncio.StreamReader, app: str, instance: str, sink: LogSink,
               rate: float = LINE_RATE, burst: float = LINE_BURST) -> None:
    """Read a child's output until EOF, cutting it into lines for the sink, at most `rate`
    lines a second (token bucket of `burst`)."""
    partial = b""
    tokens, last = burst, time.monotonic()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        now = time.monotonic()
        tokens, last = min(burst, tokens + (now - last) * rate), now
        data = partial + chunk
        if tokens < 1:  # flooding: count the lines without splitting, then let the pipe fill
            cut = data.rfind(b"\n")
            sink.drop(data.count(b"\n"))
            partial = data[cut + 1:][-MAX_LINE:]
            await asyncio.sleep(0.05)
            continue
        lines = data.split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_LINE:
            lines.append(partial[:MAX_LINE])
            partial = b""
        allowed = min(len(lines), int(tokens))
        tokens -= allowed
        for raw in lines[:allowed]:
            sink.line(app, instance, _text(raw))
        if allowed < len(lines):
            sink.drop(len(lines) - allowed)
    if partial:
        sink.line(app, instance, _text(partial))
