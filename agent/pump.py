"""Reading an instance's output: the pipe cut into lines for the sink (agent/logs.py), within
the instance's line and byte budgets (LINE_RATE, BYTE_RATE there), lines cut at MAX_LINE."""
from __future__ import annotations

import asyncio
import time

from agent.logs import (
    BYTE_BURST,
    BYTE_RATE,
    FLOOD_PAUSE,
    LINE_BURST,
    LINE_RATE,
    MAX_LINE,
    RATE,
    LogSink,
)


def _text(raw: bytes) -> str:
    return raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")


class Pump:
    """Reads a child's output until EOF, cutting it into lines for the sink, at most `rate`
    lines and `byte_rate` bytes a second (token buckets of `burst` lines, `byte_burst` bytes;
    a line is let through while any byte is left, the bucket then owes the rest). Between
    reads, `partial` and `skipping` say where it is in a line: an agent upgrade hands them
    across its exec (agent/handover.py), so no line is lost or cut there."""

    def __init__(self, stream: asyncio.StreamReader, app: str, instance: str, sink: LogSink,
                 rate: float = LINE_RATE, burst: float = LINE_BURST,
                 byte_rate: float = BYTE_RATE, byte_burst: float = BYTE_BURST,
                 skipping: bool = False) -> None:
        self.stream, self.app, self.instance, self.sink = stream, app, instance, sink
        self.rate, self.burst, self.byte_rate, self.byte_burst = rate, burst, byte_rate, byte_burst
        self.partial = b""
        self.skipping = skipping  # inside a line already cut at MAX_LINE: the rest of it goes

    def unread(self) -> bytes:
        """What was read from the pipe but is not a line yet: the partial line, then what
        the stream holds (asyncio's StreamReader has no public peek)."""
        return self.partial + bytes(self.stream._buffer)  # type: ignore[attr-defined]

    async def run(self) -> None:
        sink, rate, burst = self.sink, self.rate, self.burst
        byte_rate, byte_burst = self.byte_rate, self.byte_burst
        tokens, btokens, last = burst, byte_burst, time.monotonic()
        while True:
            chunk = await self.stream.read(65536)
            if not chunk:
                break
            now = time.monotonic()
            tokens = min(burst, tokens + (now - last) * rate)
            btokens = min(byte_burst, btokens + (now - last) * byte_rate)
            last = now
            data = self.partial + chunk
            if tokens < 1 or btokens <= 0:
                # Flooding: count the lines without splitting, then let the pipe fill.
                cut = data.rfind(b"\n")
                sink.drop(data.count(b"\n"), cut + 1, RATE)
                self.skipping = self.skipping and cut < 0
                self.partial = b"" if self.skipping else data[cut + 1:]
                if len(self.partial) > MAX_LINE:  # too long and dropped: skip the rest of it
                    self.partial, self.skipping = b"", True
                await asyncio.sleep(FLOOD_PAUSE)
                continue
            lines = data.split(b"\n")
            self.partial = lines.pop()
            if self.skipping and lines:  # the rest of a cut line ends here
                del lines[0]
                self.skipping = False
            if self.skipping:
                self.partial = b""
            elif len(self.partial) > MAX_LINE:
                lines.append(self.partial[:MAX_LINE])
                self.partial, self.skipping = b"", True
            for i, raw in enumerate(lines):
                if tokens < 1 or btokens <= 0:
                    rest = lines[i:]
                    sink.drop(len(rest), sum(len(r) + 1 for r in rest), RATE)
                    break
                tokens -= 1
                btokens -= min(len(raw), MAX_LINE) + 1
                sink.line(self.app, self.instance, _text(raw))
        if self.partial:
            sink.line(self.app, self.instance, _text(self.partial))


async def pump(stream: asyncio.StreamReader, app: str, instance: str, sink: LogSink,
               rate: float = LINE_RATE, burst: float = LINE_BURST,
               byte_rate: float = BYTE_RATE, byte_burst: float = BYTE_BURST) -> None:
    """Pump(...).run(): read a child's output into the sink until EOF."""
    await Pump(stream, app, instance, sink, rate, burst, byte_rate, byte_burst).run()
