"""Instance output: split into lines, kept in a bounded buffer per instance, and written to the
agent's stdout as `HH:MM:SS web.3 | line` (logs are event streams).

Nothing here can block a child or grow without bound: the stdout queue has a fixed size, lines
beyond it are dropped and counted, and each instance keeps only its last `keep` lines.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 16 * 1024  # longer lines are cut, so one line can never hold the agent's memory


@dataclass(frozen=True)
class LogLine:
    time: float
    instance: str
    text: str


class LogSink:
    """Fan-in of every instance's lines to stdout, plus a ring buffer per instance."""

    def __init__(self, out: BinaryIO | None = None, queue_size: int = 10_000, keep: int = 1000):
        self.out = out if out is not None else sys.stdout.buffer
        self.queue: collections.deque[LogLine] = collections.deque()
        self.queue_size = queue_size
        self.keep = keep
        self.buffers: dict[str, collections.deque[LogLine]] = {}
        self.dropped = 0
        self.ready = asyncio.Event()

    def line(self, instance: str, text: str) -> None:
        entry = LogLine(time.time(), instance, text)
        buf = self.buffers.get(instance)
        if buf is None:
            buf = self.buffers[instance] = collections.deque(maxlen=self.keep)
        buf.append(entry)
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
            return
        self.queue.append(entry)
        self.ready.set()

    def forget(self, instance: str) -> None:
        self.buffers.pop(instance, None)

    def _take(self, limit: int) -> bytes:
        batch = []
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


async def pump(stream: asyncio.StreamReader, instance: str, sink: LogSink) -> None:
    """Read a child's output until EOF, cutting it into lines for the sink."""
    partial = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_LINE:
            lines.append(partial[:MAX_LINE])
            partial = b""
        for raw in lines:
            sink.line(instance, raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r"))
    if partial:
        sink.line(instance, partial[:MAX_LINE].decode("utf-8", "replace"))
