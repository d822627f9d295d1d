"""What Control's read calls answer, kept up to date as the world changes instead of being
recomputed per call (with 10,000 instances a recount per call cost milliseconds each).

- running counts per (app, type): instances whose assigned, live agent runs them on their
  release (world.runs_assigned), adjusted per touched instance;
- `ctl ps` rows: each instance's encoded `Instance`, re-encoded only when touched, kept in
  display order; a ListInstances reply is the concatenation of its rows, cached per app until
  any row changes. Every change to the world names the instances it touched (`touch`).

Pure: no I/O. Reading is lazy: touched rows are re-encoded on the next read.
"""
from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from common.states import AgentState
from proto import formation_pb2 as pb
from scheduler.placement import InstanceKey
from scheduler.world import World

RowKey = tuple[str, str, int, str]  # (app, type, number, id): the order of `ctl ps`
PAGE_ROWS = 5000          # rows per ListInstances reply unless the request asks fewer
PAGE_BYTES = 2 * 2**20    # and at most this many bytes of rows (gRPC's default limit is 4 MiB)
CACHED_REPLIES = 64       # distinct ListInstances requests whose replies are kept
MAX_TOKEN = 512           # characters of a page token (a row key)


def _order(key: InstanceKey) -> RowKey:
    ptype, _, number = key.id.rpartition(".")
    return key.app, ptype, int(number) if number.isdigit() else 0, key.id


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field1(payload: bytes) -> bytes:
    """`payload` framed as field 1 (length-delimited) of the enclosing message."""
    return b"\x0a" + _varint(len(payload)) + payload


def _token(order: RowKey) -> str:
    return f"{order[0]}/{order[1]}/{order[2]}/{order[3]}"


def _after(token: str) -> RowKey:
    """The row a page token names (ValueError if it is none)."""
    app, ptype, number, iid = token.split("/")
    return app, ptype, int(number), iid


class ReadModels:
    def __init__(self, world: World) -> None:
        self.world = world
        self.running: Counter[tuple[str, str]] = Counter()
        self._running_keys: set[InstanceKey] = set()
        self._rows: dict[InstanceKey, bytes] = {}  # framed Instance per key
        self._states: dict[InstanceKey, int] = {}  # the state each row shows
        self._order: list[RowKey] = []             # sorted keys of _rows
        self._dirty: set[InstanceKey] = set()
        self._replies: dict[tuple, bytes] = {}     # request -> encoded ListInstancesReply

    # ---- changes ------------------------------------------------------------------

    def touch(self, keys: Iterable[InstanceKey]) -> None:
        """These instances' rows or running state may have changed."""
        world = self.world
        for key in keys:
            self._dirty.add(key)
            where = world.assignments.get(key)
            runs = where is not None and world.runs_assigned(key, where)
            if runs != (key in self._running_keys):
                if runs:
                    self._running_keys.add(key)
                    self.running[(key.app, key.type)] += 1
                else:
                    self._running_keys.discard(key)
                    self.running[(key.app, key.type)] -= 1
        if self._dirty:
            self._replies.clear()

    def touch_agent(self, name: str, also: Iterable[InstanceKey] = ()) -> None:
        """The agent's liveness or reports changed: every row it hosts or reported."""
        entry = self.world.agents.entries.get(name)
        reported = entry.reports.keys() if entry is not None else ()
        self.touch({*self.world.hosted.get(name, ()), *reported, *also})

    def touch_current(self, app: str) -> None:
        """The app's current release changed: only its pending rows show that (assigned
        rows show their assignment's release, which reconciling changes)."""
        self.touch([k for k in self.world.pending if k.app == app])

    def rebuild(self) -> None:
        """Forget everything and recompute (after recovery or a full re-read)."""
        self.running.clear()
        self._running_keys.clear()
        keys = {*self._rows, *self.world.assignments, *self.world.pending}
        for entry in self.world.agents.entries.values():
            keys.update(entry.reports)
        self.touch(keys)

    def _refresh(self) -> None:
        for key in self._dirty:
            row = self.world.instance(key)
            order = _order(key)
            if row is None:
                if self._rows.pop(key, None) is not None:
                    i = bisect.bisect_left(self._order, order)
                    del self._order[i]
                    del self._states[key]
                continue
            if key not in self._rows:
                bisect.insort(self._order, order)
            self._rows[key] = _field1(row.SerializeToString())
            self._states[key] = row.state
        self._dirty.clear()

    # ---- replies ------------------------------------------------------------------

    def instances(self, app: str = "", ptype: str = "", state: int = 0, page_size: int = 0,
                  token: str = "") -> bytes:
        """An encoded ListInstancesReply: one page of the rows of app (every app with ""),
        of one type and state if given, after the row `token` names (ValueError if bad)."""
        if self._dirty:
            self._refresh()
        if len(token) > MAX_TOKEN:
            raise ValueError(f"invalid page token (longer than {MAX_TOKEN} characters)")
        request = (app, ptype, state, page_size, token)
        reply = self._replies.get(request)
        if reply is None:
            if len(self._replies) >= CACHED_REPLIES:  # distinct requests must not pile up
                self._replies.clear()
            reply = self._replies[request] = self._page(app, ptype, state, page_size, token)
        return reply

    def _page(self, app: str, ptype: str, state: int, page_size: int, token: str) -> bytes:
        order = self._order
        lo, hi = 0, len(order)
        if app:  # rows are in (app, type, number) order: an app, or a type of it, is a slice
            lo = bisect.bisect_left(order, (app, ptype) if ptype else (app,))
            hi = bisect.bisect_left(order, (app, ptype + "\0") if ptype else (app + "\0",))
        if token:
            lo = max(lo, bisect.bisect_right(order, _after(token)))
        limit = min(page_size or PAGE_ROWS, PAGE_ROWS)
        rows: list[bytes] = []
        size, last = 0, None
        for i in range(lo, hi):
            o = order[i]
            key = InstanceKey(o[0], o[3])
            if (ptype and o[1] != ptype) or (state and self._states[key] != state):
                continue
            if len(rows) == limit or size >= PAGE_BYTES:
                assert last is not None
                token_bytes = _token(last).encode()
                return b"".join(rows) + b"\x12" + _varint(len(token_bytes)) + token_bytes
            rows.append(self._rows[key])
            size += len(rows[-1])
            last = o
        return b"".join(rows)

    def formation(self, app: str) -> pb.FormationReply:
        release = self.world.apps.current_release(app)
        if release is None:
            return pb.FormationReply()
        return pb.FormationReply(release=release.version, types=[
            pb.TypeCount(type=t, desired=n, running=self.running[(app, t)],
                         crash_looping=bool(n) and not self.running[(app, t)]
                         and self.world.crash_looping(app, t))
            for t, n in self.world.apps.counts(app).items()])

    def agent(self, name: str) -> pb.Agent:
        e = self.world.agents.entries[name]
        instances = len(self.world.hosted.get(name, ()))
        state = e.state
        if state == AgentState.DRAINING and not instances and not any(map(e.runs, e.reports)):
            state = AgentState.DRAINED
        return pb.Agent(name=name, address=e.record.address, state=state,
                        capacity=e.record.capacity, instances=instances,
                        last_seen=e.last_seen, connected=e.session is not None,
                        metrics_address=e.record.metrics_address,
                        isolation=e.record.isolation)

    def agents(self) -> pb.ListAgentsReply:
        return pb.ListAgentsReply(agents=[self.agent(n)
                                          for n in sorted(self.world.agents.entries)])

    def running_keys(self) -> set[InstanceKey]:
        return self._running_keys
