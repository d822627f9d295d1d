"""The etcd edge: Formation's only durable state, read and written through aetcd (the keys
and what they hold: records.py)."""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils

from common.appdef import Release
from scheduler import instruments
from scheduler.etcdclient import Endpoint, EtcdAuth
from scheduler.etcdclient import parse_endpoints as parse_endpoints  # its home until TLS came
from scheduler.etcdconn import Connection
from scheduler.etcdconn import StoreUnavailable as StoreUnavailable  # raised through Store
from scheduler.leadership import NotLeader
from scheduler.placement import Assigned, InstanceKey
from scheduler.records import (
    AgentRecord,
    AppEvent,
    Rollout,
    ScaleRecord,
    Snapshot,
    assigned_json,
    decode,
    rollout_json,
    scales_json,
)

log = logging.getLogger("scheduler.store")
T = TypeVar("T")
# Operations per etcd transaction (etcd's default limit is 128): 127 writes and one read of a
# written key, whose mod_revision tells the revision the transaction made. A leader's compare
# of its candidacy key (its fence) is a compare, which that limit does not count.
BATCH = 127
PAGE_APPS = 32      # keys per page of apps/ (a release may be up to 512 KiB: docs/limits.md)
PAGE_KEYS = 2048    # keys per page elsewhere (agents and assignments are small)


# Whether the call being answered has written to etcd (errors.answer sets a fresh box per
# call; batches written by child tasks share it): a NotLeader after a write is no "nothing
# was done".
writes: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("writes",
                                                                         default=None)


class Conflict(RuntimeError):
    """A guarded write found a key changed since the revision it was planned on."""


@dataclass(frozen=True)
class Fence:
    """The leader's candidacy key and the revision its term wrote it at: every write of the
    term is made only while that key is still at that revision (etcd's election recipe
    compares the key's create revision; this compares its last write, which a later term of
    the same candidacy makes), so a deposed leader's writes, and a past term's, fail in
    etcd itself, whatever its clock believes."""
    key: bytes
    revision: int


class Store:
    """Typed reads and batched writes of Formation's state over a Connection (etcdconn.py);
    with a `fence`, etcd refuses every write once that leadership is over (NotLeader)."""

    def __init__(self, conn: Connection, prefix: str = "/formation",
                 fence: Fence | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.conn = conn
        self.fence = fence
        self._timeout = conn.timeout
        self._auth = conn.auth

    @classmethod
    def connect(cls, endpoints: Sequence[Endpoint], prefix: str = "/formation",
                timeout: float = 5.0, auth: EtcdAuth | None = None) -> Store:
        """A Store over a connection of its own, unfenced (tools and tests)."""
        return cls(Connection(endpoints, timeout, auth), prefix)

    def fenced(self, fence: Fence) -> Store:
        """This store over the same connection, writing only under `fence`."""
        return Store(self.conn, self.prefix, fence)

    async def close(self) -> None:
        await self.conn.close()

    async def _call(self, op: str, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        return await self.conn.call(op, fn)

    def key(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    # ---- reads --------------------------------------------------------------

    async def _page(self, start: bytes, end: bytes, revision: int, limit: int) -> Any:
        """One page of a range read at `revision` (0: the newest)."""
        async def read(c: aetcd.Client) -> Any:
            await c.connect()
            request = aetcd.rpc.RangeRequest(key=start, range_end=end, limit=limit,
                                             revision=revision)
            try:
                return await c.kvstub.Range(request, timeout=self._timeout,
                                            metadata=c.metadata)
            except aetcd.rpc.AioRpcError as e:
                aetcd.exceptions._handle_exception(e)  # the same errors as aetcd's own calls
        return await self._call("load", read)

    async def load(self, subtree: str = "") -> Snapshot:
        """Read the whole tree (or one subtree: "apps", "agents", "assignments") at one
        revision, in pages, so no single response nears gRPC's message limit however much
        is stored (docs/limits.md)."""
        root = self.key("")
        snap = Snapshot()
        for part in (subtree,) if subtree else ("apps", "agents", "assignments"):
            start = root + part.encode() + b"/"
            end = aetcd.utils.prefix_range_end(start)
            limit = PAGE_APPS if part == "apps" else PAGE_KEYS
            while True:
                resp = await self._page(start, end, snap.revision, limit)
                snap.revision = snap.revision or resp.header.revision
                for kv in resp.kvs:
                    path = kv.key[len(root):].decode()
                    decode(snap, path.split("/"), kv.value)
                    if path.startswith("apps/"):
                        snap.app_revisions[path] = kv.mod_revision
                    elif path.startswith("assignments/"):
                        _, app, iid = path.split("/", 2)
                        snap.assignment_revisions[InstanceKey(app, iid)] = kv.mod_revision
                if not resp.more or not resp.kvs:
                    break
                start = resp.kvs[-1].key + b"\0"
        return snap

    # ---- writes -------------------------------------------------------------

    async def _txn(self, puts: dict[bytes, bytes], deletes: list[bytes],
                   guard: Mapping[bytes, int]) -> int:
        """One transaction, made only if each key in `guard` still has that mod_revision (0:
        absent); else Conflict. Returns the revision it made (0 if it only deleted)."""
        tx = self.conn.client.transactions
        compare = [tx.mod(k) == revision for k, revision in guard.items()]
        failure: list[Any] = []
        if self.fence is not None:
            compare.append(tx.mod(self.fence.key) == self.fence.revision)
            failure.append(tx.get(self.fence.key))  # gone, or written by a later term
        ops: list[Any] = [tx.put(k, v) for k, v in puts.items()] + [tx.delete(k) for k in deletes]
        if puts:
            ops.append(tx.get(next(iter(puts))))
        ok, responses = await self._call("txn", lambda c: c.transaction(
            compare=compare, success=ops, failure=failure))
        box = writes.get()
        if ok and box is not None:
            box[0] = True
        if not ok:
            fence = self.fence
            if fence is not None and not (responses and responses[0] and responses[0][0][1]
                                          .mod_revision == fence.revision):
                instruments.FENCED_WRITES.inc()
                raise NotLeader("etcd refused the write: this scheduler no longer leads")
            raise Conflict("a key changed since it was read")
        return responses[-1][0][1].mod_revision if puts and responses[-1] else 0

    async def write(self, puts: dict[bytes, bytes], deletes: Sequence[bytes] = (),
                    expected: Mapping[bytes, int] | None = None) -> dict[bytes, int]:
        """Apply puts and deletes in transactions of at most BATCH writes each, sent
        concurrently (their keys are disjoint). With `expected` (key -> mod_revision, absent
        = 0) every batch is compare-and-set: Conflict if any key moved since. Returns the new
        mod_revision of each put key. If it raises, some batches may have landed: the caller
        re-reads before it writes again."""
        items: list[tuple[bytes, bytes | None]] = [*puts.items(), *((k, None) for k in deletes)]
        batches = [items[i:i + BATCH] for i in range(0, len(items), BATCH)]

        async def one(batch: list[tuple[bytes, bytes | None]]) -> dict[bytes, int]:
            bp = {k: v for k, v in batch if v is not None}
            guard = {} if expected is None else {k: expected.get(k, 0) for k, _ in batch}
            revision = await self._txn(bp, [k for k, v in batch if v is None], guard)
            return dict.fromkeys(bp, revision)

        out: dict[bytes, int] = {}
        for part in await asyncio.gather(*(one(b) for b in batches)):
            out.update(part)
        return out

    async def create_release(self, app: str, release: Release) -> int:
        """Store a new release and make it current; 0 if that version already exists, else
        the revision written."""
        key = self.key("apps", app, "releases", str(release.version))
        try:
            return await self._txn({key: release.to_json(),
                                    self.key("apps", app, "current"):
                                        str(release.version).encode()}, [], {key: 0})
        except Conflict:
            return 0

    async def set_formation(self, app: str, counts: dict[str, int],
                            history: list[ScaleRecord] | None = None
                            ) -> tuple[int, list[ScaleRecord] | None]:
        """Write counts, and the app's formation history if given (the newest records that fit:
        records.scales_json), together; (the revision, the records kept)."""
        puts = {self.key("apps", app, "formation", t): str(n).encode()
                for t, n in counts.items()}
        kept = None
        if history is not None:
            puts[self.key("apps", app, "scales")], kept = scales_json(history)
        written = await self.write(puts)
        return max(written.values(), default=0), kept

    async def put_rollout(self, app: str, record: Rollout) -> int:
        """Write the app's rollout record; the revision written."""
        written = await self.write({self.key("apps", app, "rollout"): rollout_json(record)})
        return max(written.values())

    async def revert(self, app: str, version: int, record: Rollout) -> int:
        """Make release `version` current again with its rollout record, in one transaction;
        the revision written."""
        return await self._txn({self.key("apps", app, "current"): str(version).encode(),
                                self.key("apps", app, "rollout"): rollout_json(record)}, [], {})

    async def drop_releases(self, app: str, versions: Sequence[int]) -> None:
        await self.write({}, [self.key("apps", app, "releases", str(v)) for v in versions])

    async def put_agent(self, record: AgentRecord) -> None:
        await self.write({self.key("agents", record.name): json.dumps(asdict(record)).encode()})

    async def delete_agent(self, name: str) -> None:
        await self.write({}, [self.key("agents", name)])

    async def write_assignments(self, changes: Mapping[InstanceKey, Assigned | None],
                                expected: Mapping[InstanceKey, int]) -> dict[InstanceKey, int]:
        """Write assignment changes (None: delete), compare-and-set on each key's expected
        mod_revision (absent: 0). Returns the new mod_revision of each key put. Conflict if
        another writer moved a key; then, as after any failure, re-read before writing again."""
        keys = {k: self.key("assignments", k.app, k.id) for k in changes}
        puts = {keys[k]: assigned_json(a) for k, a in changes.items() if a is not None}
        deletes = [keys[k] for k, a in changes.items() if a is None]
        written = await self.write(puts, deletes, {keys[k]: r for k, r in expected.items()
                                                   if k in keys})
        return {k: written[b] for k, b in keys.items() if b in written}

    # ---- watch --------------------------------------------------------------

    async def _watch(self, c: aetcd.Client, after_revision: int) -> Any:
        # A watch made with a token etcd no longer knows (expired, or etcd restarted) is
        # created, then cancelled, and aetcd drops the cancel: it would wait forever. A read
        # first renews the token, or fails and _call authenticates again.
        if self._auth.user:
            await c.get(self.key("apps"))
        return await c.watch_prefix(self.key("apps", ""), start_revision=after_revision + 1)

    async def watch_apps(self, after_revision: int, on_event: Callable[[AppEvent], None],
                         on_lost: Callable[[], None]) -> None:
        """Call on_event for every change under apps/ made after after_revision (this
        scheduler's own writes included); never returns.

        A watch compacted away is re-established and reported through on_lost, so the caller
        re-reads: nothing is missed, at worst something is read twice.
        """
        revision = after_revision
        delay = 0.2
        root = len(self.key(""))
        while True:
            try:
                # B023: the lambda is called (and awaited) before revision changes
                watch = await self._call("watch", lambda c: self._watch(c, revision))  # noqa: B023
                delay = 0.2
                async for event in watch:
                    revision = max(revision, event.kv.mod_revision)
                    on_event(AppEvent(event.kv.key[root:].decode(),
                                      None if event.kind == "DELETE" else event.kv.value,
                                      event.kv.mod_revision))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: re-watch from where it was
                log.info("etcd watch lost (%s); re-establishing", e)
                if isinstance(e, aetcd.exceptions.RevisionCompactedError):
                    revision = e.compacted_revision - 1
                    on_lost()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

