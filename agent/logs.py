"""Instance output: split into lines, kept in a bounded buffer per instance, written to the
agent's stdout as `HH:MM:SS web.3 | line` (logs are event streams), and streamed to followers.

Nothing here can block the agent or grow without bound:
- each instance may log LINE_RATE lines and BYTE_RATE bytes a second (bursts of LINE_BURST
  lines, BYTE_BURST bytes); beyond either, its output is read and dropped without being split,
  and the pipe is left to fill for a moment, which slows the flooding child, not the agent;
- lines are cut at MAX_LINE bytes; each instance keeps its last KEEP lines (KEEP_BYTES at most);
  the lines of an ended one-shot run (a release phase) stay for `ctl logs release`, those of
  the last KEPT_RUNS such runs;
- the stdout queue and each follower's queue are bounded in lines and in bytes; a line that
  does not fit is dropped. A follower is told how many lines it missed: the next line it
  gets carries the count (`missed`). A slow follower is never cut off: what it costs is
  bounded, and a paused `ctl logs -f | less` goes on where it can when it reads again.
Every dropped line is counted, by reason (`dropped_lines`, `dropped_bytes`).

Control characters in a line are escaped on the agent's stdout (escape()): an instance cannot
move the cursor of, or set the clipboard of (OSC 52), whoever reads the agent's output.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from common.escape import escape

MAX_LINE = 16 * 1024           # bytes; a longer line is cut here
KEEP = 1000                    # lines of history kept per instance (for --tail) ...
KEEP_BYTES = 1 << 20           # ... and at most this many bytes of them
LINE_RATE = 2000.0             # lines a second an instance may log (token bucket) ...
LINE_BURST = 5000.0            # ... in bursts of up to this many lines
BYTE_RATE = float(1 << 20)     # bytes a second an instance may log (token bucket) ...
BYTE_BURST = float(4 << 20)    # ... in bursts of up to this many bytes
STDOUT_LINES = 10_000          # lines waiting for the agent's stdout, at most ...
STDOUT_BYTES = 8 << 20         # ... and bytes; a line beyond either is dropped
FOLLOWER_LINES = 10_000        # lines queued for one Logs(follow) stream, at most ...
FOLLOWER_BYTES = 4 << 20       # ... and bytes; beyond, dropped and told to it as `missed`
LINE_COST = 64                 # bytes a queued line is counted for besides its text
FLOOD_PAUSE = 0.05             # seconds an instance over its budget is left to its full pipe
KEPT_RUNS = 8                  # ended one-shot runs (release phases) whose lines stay

# Reasons a line is dropped, the label of the agent's drop counters.
RATE, STDOUT, FOLLOWER = "rate", "stdout", "follower"


@dataclass(frozen=True)
class LogLine:
    time: float
    app: str
    instance: str
    text: str


def cost(e: LogLine) -> int:
    """What a queued line is counted for, in bytes (about its size in memory)."""
    return len(e.text) + LINE_COST


Match = Callable[[LogLine], bool]


class Follower:
    """A follower's queue, bounded in lines and in bytes. A line that does not fit is dropped
    and counted; the next line queued carries that count, so the reader learns what it
    missed and where."""

    def __init__(self, match: Match, lines: int = FOLLOWER_LINES,
                 nbytes: int = FOLLOWER_BYTES) -> None:
        self.match = match
        self.max_lines, self.max_bytes = lines, nbytes
        self.items: collections.deque[tuple[int, LogLine]] = collections.deque()
        self.size = 0
        self.missed = 0  # lines dropped since the last one queued
        self.ready = asyncio.Event()

    def put(self, e: LogLine) -> bool:
        c = cost(e)
        if len(self.items) >= self.max_lines or self.size + c > self.max_bytes:
            self.missed += 1
            return False
        self.items.append((self.missed, e))
        self.missed = 0
        self.size += c
        self.ready.set()
        return True

    def take(self) -> tuple[int, LogLine] | None:
        """The next line and how many were missed just before it, or None if none is queued."""
        if not self.items:
            self.ready.clear()
            return None
        missed, e = self.items.popleft()
        self.size -= cost(e)
        return missed, e

    async def get(self) -> tuple[int, LogLine]:
        while True:  # each pass either returns or waits for a put
            item = self.take()
            if item is not None:
                return item
            await self.ready.wait()


class _Ring:
    """An instance's last lines: at most `lines` of them and `nbytes` bytes."""

    def __init__(self, lines: int, nbytes: int) -> None:
        self.lines: collections.deque[LogLine] = collections.deque()
        self.max_lines, self.max_bytes = lines, nbytes
        self.size = 0

    def append(self, e: LogLine) -> None:
        self.lines.append(e)
        self.size += cost(e)
        while self.lines and (len(self.lines) > self.max_lines or self.size > self.max_bytes):
            self.size -= cost(self.lines.popleft())


class LogSink:
    """Fan-in of every instance's lines: stdout, a ring buffer per instance, followers."""

    def __init__(self, out: BinaryIO | None = None, queue_size: int = STDOUT_LINES,
                 keep: int = KEEP, queue_bytes: int = STDOUT_BYTES,
                 keep_bytes: int = KEEP_BYTES) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.queue: collections.deque[LogLine] = collections.deque()
        self.queue_size, self.queue_bytes = queue_size, queue_bytes
        self.queued = 0  # bytes in self.queue
        self.keep, self.keep_bytes = keep, keep_bytes
        self.buffers: dict[tuple[str, str], _Ring] = {}
        self.retired: collections.deque[tuple[str, str]] = collections.deque()  # kept runs
        self.followers: list[Follower] = []
        self.dropped = 0  # lines, every reason
        self.dropped_lines: collections.Counter[str] = collections.Counter()
        self.dropped_bytes: collections.Counter[str] = collections.Counter()
        self.ready = asyncio.Event()
        self._writing: asyncio.Future | None = None  # the write to stdout under way

    def line(self, app: str, instance: str, text: str) -> None:
        entry = LogLine(time.time(), app, instance, text)
        buf = self.buffers.get((app, instance))
        if buf is None:
            buf = self.buffers[(app, instance)] = _Ring(self.keep, self.keep_bytes)
        buf.append(entry)
        for follower in self.followers:
            if follower.match(entry) and not follower.put(entry):
                self.drop(1, len(text), FOLLOWER)
        c = cost(entry)
        if len(self.queue) >= self.queue_size or self.queued + c > self.queue_bytes:
            self.drop(1, len(text), STDOUT)
            return
        self.queue.append(entry)
        self.queued += c
        self.ready.set()

    def drop(self, n: int, nbytes: int = 0, reason: str = RATE) -> None:
        self.dropped += n
        self.dropped_lines[reason] += n
        self.dropped_bytes[reason] += nbytes

    def forget(self, app: str, instance: str) -> None:
        """Drop an instance's buffered lines. Every copy of it (at any release) writes to this
        one buffer, so only once the last copy is stopped (agent/supervisor.py)."""
        self.buffers.pop((app, instance), None)
        if (app, instance) in self.retired:
            self.retired.remove((app, instance))

    def retire(self, app: str, instance: str) -> None:
        """Keep an ended one-shot run's lines for `ctl logs release`: those of the last
        KEPT_RUNS runs stay, the oldest go."""
        key = (app, instance)
        if key not in self.buffers:
            return
        if key in self.retired:
            self.retired.remove(key)
        self.retired.append(key)
        while len(self.retired) > KEPT_RUNS:
            self.buffers.pop(self.retired.popleft(), None)

    def history(self, match: Match, tail: int) -> list[LogLine]:
        """The last `tail` buffered lines that match, oldest first."""
        if tail <= 0:
            return []
        lines = [e for buf in self.buffers.values() for e in buf.lines if match(e)]
        lines.sort(key=lambda e: e.time)
        return lines[-tail:]

    def follow(self, match: Match, lines: int = FOLLOWER_LINES,
               nbytes: int = FOLLOWER_BYTES) -> Follower:
        follower = Follower(match, lines, nbytes)
        self.followers.append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        self.followers = [f for f in self.followers if f is not follower]

    def _take(self, limit: int) -> bytes:
        batch: list[str] = []
        while self.queue and len(batch) < limit:
            e = self.queue.popleft()
            self.queued -= cost(e)
            stamp = time.strftime("%H:%M:%S", time.localtime(e.time))
            batch.append(f"{stamp} {e.instance} | {escape(e.text)}\n")
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
            # (Shielded: a write begun is finished even if this task is cancelled.)
            self._writing = loop.run_in_executor(None, self._write, data)
            await asyncio.shield(self._writing)

    def idle(self) -> bool:
        """No write to stdout under way."""
        return self._writing is None or self._writing.done()

    async def quiet(self) -> None:
        """Return once the write under way, if any, is over (no line is lost at exit)."""
        while not self.idle():
            assert self._writing is not None
            await asyncio.wait([self._writing])

    def flush(self) -> None:
        """Write whatever is queued, now (at exit, once quiet())."""
        self._write(self._take(len(self.queue)))

    def handover(self) -> dict[str, Any]:
        """The buffered lines and drop counts, for an agent upgrade (agent/handover.py)."""
        return {"buffers": [[app, instance, [[e.time, e.text] for e in ring.lines]]
                            for (app, instance), ring in self.buffers.items()],
                "retired": [list(key) for key in self.retired], "dropped": self.dropped,
                "dropped_lines": dict(self.dropped_lines),
                "dropped_bytes": dict(self.dropped_bytes)}

    def adopt(self, state: dict[str, Any]) -> None:
        for app, instance, lines in state["buffers"]:
            ring = self.buffers[(app, instance)] = _Ring(self.keep, self.keep_bytes)
            for t, text in lines:
                ring.append(LogLine(float(t), app, instance, text))
        self.retired.extend((app, instance) for app, instance in state["retired"])
        self.dropped = int(state["dropped"])
        self.dropped_lines.update(state["dropped_lines"])
        self.dropped_bytes.update(state["dropped_bytes"])

    def _write(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass
