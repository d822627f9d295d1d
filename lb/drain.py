"""Acknowledgements held back until the servers a set removed have nothing in flight.

The scheduler stops an instance (SIGTERM) as soon as formation-lb acknowledges a version
without it, and most apps die on SIGTERM at once: a request still in flight to it would be cut
(and a POST is not retried). So version V is acknowledged once every server that V or an
earlier set took out of balancing has no request in flight: HAProxy counts no session
(`scur`) and no queued request (`qcur`) for it, or it is gone (deleted), or a later set wants
it again. Requests no longer reach a server in maintenance, so one seen idle stays idle.

Acknowledgements stay in order: V is never acknowledged while a removal of V or of an earlier
set still drains (the scheduler reads "V" as "every version up to V applied"). Sets keep
being read and applied meanwhile; one Acker per stream polls HAProxy every DRAIN_POLL
seconds while anything waits (checking once at once, so an idle removal costs no poll delay)
and acknowledges the newest version it may. After DRAIN_MOST seconds a version is
acknowledged anyway, with a warning. The scheduler stops waiting at the type's
deregister_timeout in any case; a lost stream drops what waited (the next starts over with
the whole set).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from lb.instruments import RUNTIME_ERRORS
from lb.runtime import Unavailable

log = logging.getLogger("lb")
DRAIN_POLL = 0.02   # seconds between looks at HAProxy's stats while a removal drains
DRAIN_MOST = 300.0  # seconds after which a set is acknowledged anyway (the largest
                    # deregister_timeout: the scheduler has stopped waiting long before)
SHOWN = 5           # server names a warning lists before "and N more"
# Which of these removed servers still have requests in flight; Unavailable if unknown.
Busy = Callable[[set[str]], Awaitable[set[str]]]
Send = Callable[[int], None]


def stat_command(backend: str) -> str:
    """The stats of the backend's servers only (type 4: servers; -1: all of them)."""
    return f"show stat {backend} 4 -1"


def parse_stat(text: str, backend: str) -> dict[str, int]:
    """`show stat` CSV as requests in flight (current sessions + queued) by server name of
    the backend; ValueError if it is not that CSV. Columns are found by the header line
    (`# pxname,svname,qcur,qmax,scur,...`), not by position."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not show stat's CSV: {text[:60]!r}")
    columns = lines[0][2:].split(",")
    try:
        px, sv, qcur, scur = (columns.index(c) for c in ("pxname", "svname", "qcur", "scur"))
    except ValueError:
        raise ValueError(f"show stat's header lacks a column: {lines[0][:80]!r}") from None
    last = max(px, sv, qcur, scur)
    out: dict[str, int] = {}
    for line in lines[1:]:
        f = line.split(",")
        if len(f) <= last:
            raise ValueError(f"unexpected show stat line: {line[:80]!r}")
        if f[px] != backend or f[sv] in ("BACKEND", "FRONTEND"):
            continue
        try:
            out[f[sv]] = int(f[qcur] or 0) + int(f[scur] or 0)
        except ValueError:
            raise ValueError(f"unexpected show stat line: {line[:80]!r}") from None
    return out


@dataclass
class Waiting:
    """An applied version not yet acknowledged, and its removed servers not yet seen idle."""
    version: int
    names: set[str]
    since: float
    seq: int


class Pending:
    """Pure: the versions applied on one stream, in order, and which of them may be
    acknowledged."""

    def __init__(self) -> None:
        self.waiting: deque[Waiting] = deque()
        self.acked = 0   # the last version given out by take() (0: none yet)
        self._seq = 0

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def add(self, version: int, removed: Iterable[str], now: float) -> None:
        self._seq += 1
        self.waiting.append(Waiting(version, set(removed), now, self._seq))

    def names(self) -> tuple[set[str], int]:
        """The servers to look at, and the mark to give drained() with what was seen: a
        version added after the look is not cleared by it (its server may have been wanted
        again, and idle, at the look, then removed once more with a request in flight)."""
        return set().union(*(w.names for w in self.waiting)), self._seq

    def drained(self, idle: Iterable[str], mark: int) -> None:
        """These servers had nothing in flight at the look that `mark` came with."""
        idle = set(idle)
        for w in self.waiting:
            if w.seq <= mark:
                w.names -= idle

    def expire(self, now: float, most: float) -> list[tuple[int, list[str]]]:
        """Give up waiting on versions waiting for `most` seconds or more: each one's version
        and the servers it still waited for (for a warning)."""
        late = []
        for w in self.waiting:
            if now - w.since >= most and w.names:
                late.append((w.version, sorted(w.names)))
                w.names = set()
        return late

    def take(self) -> int | None:
        """The newest version whose removals, and every earlier version's, have drained (it
        and those before it leave the queue); None if none may be acknowledged now. Never a
        version at or below one already given."""
        best = None
        while self.waiting and not self.waiting[0].names:
            best = self.waiting.popleft().version
        if best is None or best <= self.acked:
            return None
        self.acked = best
        return best


class Acker:
    """One stream's acknowledgements: add() each applied version, run() as a task beside the
    stream (cancelled with it)."""

    def __init__(self, busy: Busy, send: Send) -> None:
        self.pending = Pending()
        self._busy = busy
        self._send = send
        self._wake = asyncio.Event()
        self._failing = False  # the runtime API did not answer the last look (said once)

    def add(self, version: int, removed: Iterable[str]) -> None:
        """Version applied, these servers taken out of balancing by it: acknowledged now if
        nothing waits (no removal, none before it draining), else once drained."""
        self.pending.add(version, removed, time.monotonic())
        self._ack()
        if self.pending:
            self._wake.set()

    def _ack(self) -> None:
        version = self.pending.take()
        if version is not None:
            self._send(version)

    async def run(self) -> None:
        """Forever: while versions wait, look at HAProxy every DRAIN_POLL seconds (the first
        look at once), or less often if a look takes long (a huge backend's stats)."""
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
            start = time.monotonic()
            names, mark = self.pending.names()
            if names:
                await self._look(names, mark)
            now = time.monotonic()
            for version, late in self.pending.expire(now, DRAIN_MOST):
                more = f" and {len(late) - SHOWN} more" if len(late) > SHOWN else ""
                log.warning("endpoints v%d acknowledged although %s still had requests in "
                            "flight after %.0fs", version, ", ".join(late[:SHOWN]) + more,
                            DRAIN_MOST)
            self._ack()
            if self.pending:
                await asyncio.sleep(max(DRAIN_POLL, 2 * (now - start)))

    async def _look(self, names: set[str], mark: int) -> None:
        try:
            busy = await self._busy(names)
        except Unavailable as e:
            RUNTIME_ERRORS.inc()
            if not self._failing:
                log.warning("%s (acknowledgements wait; retrying)", e)
            self._failing = True
            return
        self._failing = False
        self.pending.drained(names - busy, mark)
