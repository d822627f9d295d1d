"""The etcd edge: Formation's only durable state, read and written through aetcd.

Layout under the prefix (default `/formation`):

    apps/<app>/releases/<version>   Release JSON
    apps/<app>/current              current release version
    apps/<app>/formation/<type>     desired count
    agents/<name>                   AgentRecord JSON
    assignments/<app>/<instance>    Assigned JSON {agent, release}
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions

from common.appdef import Release
from scheduler.placement import Assigned, InstanceKey

log = logging.getLogger("scheduler.store")
T = TypeVar("T")
# Operations per etcd transaction (etcd's default limit is 128): 127 writes and one read of a
# written key, whose mod_revision tells the revision the transaction made.
BATCH = 127


class StoreUnavailable(RuntimeError):
    """No etcd endpoint answered."""


class Conflict(RuntimeError):
    """A guarded write found a key changed since the revision it was planned on."""


@dataclass
class AgentRecord:
    """What etcd keeps of an agent, so a new scheduler knows it before it reconnects."""
    name: str
    address: str = ""
    capacity: int = 0
    state: str = "ready"  # ready | draining (down is derived from heartbeats, never stored)
    metrics_address: str = ""
    api_address: str = ""


@dataclass
class Snapshot:
    """Everything under the prefix, decoded."""
    releases: dict[str, dict[int, Release]] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    formation: dict[tuple[str, str], int] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    assignments: dict[InstanceKey, Assigned] = field(default_factory=dict)
    assignment_revisions: dict[InstanceKey, int] = field(default_factory=dict)  # mod_revision
    app_revisions: dict[str, int] = field(default_factory=dict)  # "apps/a/current" -> mod_rev
    revision: int = 0


@dataclass(frozen=True)
class AppEvent:
    """One change under apps/ seen by the watch: `value` None for a delete."""
    path: str  # relative to the prefix: "apps/<app>/formation/<type>"
    value: bytes | None
    revision: int


def parse_endpoints(urls: str) -> list[tuple[str, int]]:
    """`http://h1:2379,http://h2:2379` -> [(h1, 2379), (h2, 2379)]."""
    out = []
    for url in filter(None, (u.strip() for u in urls.split(","))):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname:
            raise ValueError(f"invalid etcd URL {url!r}")
        out.append((parts.hostname, parts.port or 2379))
    if not out:
        raise ValueError("no etcd URL given")
    return out


class Store:
    """Typed reads and batched writes over one or more etcd endpoints (fails over between them)."""

    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = "/formation",
                 timeout: float = 5.0) -> None:
        self.prefix = prefix.rstrip("/")
        self._endpoints = endpoints
        self._timeout = timeout
        self._index = 0
        self._client = self._new_client()
        self.request_seconds: Callable[[str, float], None] = lambda op, s: None

    def _new_client(self) -> aetcd.Client:
        host, port = self._endpoints[self._index]
        return aetcd.Client(host=host, port=port, timeout=self._timeout)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, op: str, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run fn against the current endpoint, failing over to the others once each."""
        last: Exception | None = None
        for _ in range(len(self._endpoints)):
            started = time.monotonic()
            try:
                result = await fn(self._client)
                self.request_seconds(op, time.monotonic() - started)
                return result
            except (aetcd.exceptions.ConnectionFailedError,
                    aetcd.exceptions.ConnectionTimeoutError, TimeoutError) as e:
                last = e
                log.warning("etcd %s:%d failed after %.2fs: %s", *self._endpoints[self._index],
                            time.monotonic() - started, type(e).__name__)
                if len(self._endpoints) > 1:
                    await self._client.close()
                    self._index = (self._index + 1) % len(self._endpoints)
                    self._client = self._new_client()
        host, port = self._endpoints[self._index]
        raise StoreUnavailable(f"etcd unavailable ({host}:{port}): {last}")

    def key(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    # ---- reads --------------------------------------------------------------

    async def load(self, subtree: str = "") -> Snapshot:
        """Read the whole tree (or one subtree, e.g. "apps") in one request."""
        root = self.key("")
        resp = await self._call("load", lambda c: c.get_prefix(root + subtree.encode()))
        snap = Snapshot(revision=resp.header.revision)
        for kv in resp.kvs:
            path = kv.key[len(root):].decode()
            self.decode(snap, path.split("/"), kv.value)
            if path.startswith("apps/"):
                snap.app_revisions[path] = kv.mod_revision
            elif path.startswith("assignments/"):
                _, app, iid = path.split("/", 2)
                snap.assignment_revisions[InstanceKey(app, iid)] = kv.mod_revision
        return snap

    @staticmethod
    def decode(snap: Snapshot, parts: list[str], value: bytes) -> None:
        try:
            match parts:
                case ["apps", app, "releases", version]:
                    snap.releases.setdefault(app, {})[int(version)] = Release.from_json(value)
                case ["apps", app, "current"]:
                    snap.current[app] = int(value)
                case ["apps", app, "formation", ptype]:
                    snap.formation[(app, ptype)] = int(value)
                case ["agents", name]:
                    snap.agents[name] = AgentRecord(**json.loads(value))
                case ["assignments", app, iid]:
                    raw = json.loads(value)
                    snap.assignments[InstanceKey(app, iid)] = Assigned(
                        raw["agent"], int(raw["release"]), raw.get("previous", ""))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring undecodable key %s: %s", "/".join(parts), e)

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

    async def set_formation(self, app: str, counts: dict[str, int]) -> int:
        written = await self.write({self.key("apps", app, "formation", t): str(n).encode()
                                    for t, n in counts.items()})
        return max(written.values(), default=0)

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
        puts = {keys[k]: _assigned_json(a) for k, a in changes.items() if a is not None}
        deletes = [keys[k] for k, a in changes.items() if a is None]
        written = await self.write(puts, deletes, {keys[k]: r for k, r in expected.items()
                                                   if k in keys})
        return {k: written[b] for k, b in keys.items() if b in written}

    # ---- watch --------------------------------------------------------------

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
                watch = await self._call("watch", lambda c: c.watch_prefix(
                    self.key("apps", ""), start_revision=revision + 1))  # noqa: B023
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


def _assigned_json(a: Assigned) -> bytes:
    return json.dumps({"agent": a.agent, "release": a.release, "previous": a.previous}
                      if a.previous else {"agent": a.agent, "release": a.release}).encode()
