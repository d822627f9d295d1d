"""The etcd edge: Formation's only durable state, read and written through aetcd (the keys
and what they hold: records.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils

from common.appdef import Release
from common.tls import TlsError
from scheduler.etcdclient import Endpoint, EtcdAuth, EtcdClient, explain
from scheduler.etcdclient import parse_endpoints as parse_endpoints  # its home until TLS came
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
# written key, whose mod_revision tells the revision the transaction made.
BATCH = 127
PAGE_APPS = 32      # keys per page of apps/ (a release may be up to 512 KiB: docs/limits.md)
PAGE_KEYS = 2048    # keys per page elsewhere (agents and assignments are small)
MAX_RECEIVE = 64 * 2**20  # bytes of one etcd response the client accepts


def _token_expired(text: str) -> bool:
    """etcd's ErrInvalidAuthToken and ErrAuthOldRevision: get a new token and retry."""
    return "invalid auth token" in text or "auth store is old" in text


def _refused(text: str) -> bool:
    return any(s in text for s in ("authentication failed", "permission denied",
                                   "user name is empty", "authentication is not enabled"))


class StoreUnavailable(RuntimeError):
    """No etcd endpoint answered."""


class Conflict(RuntimeError):
    """A guarded write found a key changed since the revision it was planned on."""


class Store:
    """Typed reads and batched writes over one or more etcd endpoints (fails over between them),
    over TLS and as a user if `auth` says so."""

    def __init__(self, endpoints: Sequence[Endpoint], prefix: str = "/formation",
                 timeout: float = 5.0, auth: EtcdAuth | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self._endpoints = [Endpoint(*e) for e in endpoints]  # plain (host, port) pairs too
        self._timeout = timeout
        self._auth = auth or EtcdAuth()
        self._index = 0
        self._client = self._new_client()
        self.request_seconds: Callable[[str, float], None] = lambda op, s: None

    def _new_client(self) -> EtcdClient:
        return EtcdClient(self._endpoints[self._index], self._auth, timeout=self._timeout,
                          options={"grpc.max_receive_message_length": MAX_RECEIVE})

    async def _replace(self, failed: EtcdClient, next_endpoint: bool) -> None:
        """A new client (a new connection, authenticated again) instead of `failed`, unless
        a concurrent call replaced it already."""
        if failed is not self._client:
            return
        if next_endpoint:
            self._index = (self._index + 1) % len(self._endpoints)
        self._client = self._new_client()
        await failed.close()

    async def close(self) -> None:
        await self._client.close()

    @property
    def _target(self) -> str:
        return self._client.target

    async def _call(self, op: str, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run fn against the current endpoint, failing over to the others once each. A token
        etcd calls expired (its --auth-token-ttl of idleness) is renewed once per call by a
        new connection; a refused user is StoreUnavailable with etcd's reason."""
        last: Exception | None = None
        tries, renewed, stale = len(self._endpoints), False, 0
        while tries > 0:
            client = self._client
            started = time.monotonic()
            try:
                await client.connect()  # first, so failures to authenticate are told apart
                result = await fn(client)
                self.request_seconds(op, time.monotonic() - started)
                return result
            except TlsError as e:  # files that changed since the start and cannot be used
                raise StoreUnavailable(f"etcd {self._target}: {e}") from None
            except (aetcd.exceptions.ClientError, TimeoutError) as e:
                text = str(e)
                if client is not self._client and stale < 3:  # replaced by another call
                    stale += 1
                    continue
                if self._auth.user and not renewed and _token_expired(text):
                    renewed = True
                    log.info("etcd %s: auth token expired (%s); authenticating again",
                             self._target, explain(e))
                    await self._replace(client, next_endpoint=False)
                    continue
                if _refused(text):  # every endpoint shares the users: no failing over
                    who = f"user {self._auth.user}" if self._auth.user else "this client"
                    raise StoreUnavailable(f"etcd {self._target} refused {who}: "
                                           f"{explain(e)}") from None
                if not isinstance(e, (aetcd.exceptions.ConnectionFailedError,
                                      aetcd.exceptions.ConnectionTimeoutError, TimeoutError)):
                    raise
                last = e
                tries -= 1
                if len(self._endpoints) > 1:  # with one endpoint the caller says it
                    log.warning("etcd %s failed after %.2fs: %s", self._target,
                                time.monotonic() - started, explain(e))
                    await self._replace(client, next_endpoint=True)
        raise StoreUnavailable(f"etcd unavailable ({self._target}): {explain(last)}")

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
        tx = self._client.transactions
        compare = [tx.mod(k) == revision for k, revision in guard.items()]
        ops: list[Any] = [tx.put(k, v) for k, v in puts.items()] + [tx.delete(k) for k in deletes]
        if puts:
            ops.append(tx.get(next(iter(puts))))
        ok, responses = await self._call("txn", lambda c: c.transaction(
            compare=compare, success=ops, failure=[]))
        if not ok:
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

