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
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions

from common.appdef import Release
from scheduler.placement import Assigned, InstanceKey

log = logging.getLogger("scheduler.store")
T = TypeVar("T")
BATCH = 128  # operations per etcd transaction; etcd's default limit is 128


class StoreUnavailable(RuntimeError):
    """No etcd endpoint answered."""


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
    revision: int = 0


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
                    aetcd.exceptions.ConnectionTimeoutError, asyncio.TimeoutError) as e:
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
            self._decode(snap, kv.key[len(root):].decode().split("/"), kv.value)
        return snap

    @staticmethod
    def _decode(snap: Snapshot, parts: list[str], value: bytes) -> None:
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

    async def write(self, puts: dict[bytes, bytes], deletes: list[bytes] = ()) -> None:
        """Apply puts and deletes in transactions of at most BATCH operations each, sent
        concurrently (their keys are disjoint). If it raises, some batches may have landed:
        the caller re-reads before it trusts its own view again."""
        tx = self._client.transactions
        ops: list[Any] = [tx.put(k, v) for k, v in puts.items()] + [tx.delete(k) for k in deletes]
        batches = [ops[i:i + BATCH] for i in range(0, len(ops), BATCH)]
        await asyncio.gather(*(self._call("txn", lambda c, b=b: c.transaction(
            compare=[], success=b, failure=[])) for b in batches))

    async def create_release(self, app: str, release: Release) -> bool:
        """Store a new release and make it current; False if that version already exists."""
        tx = self._client.transactions
        key = self.key("apps", app, "releases", str(release.version))
        ok, _ = await self._call("txn", lambda c: c.transaction(
            compare=[tx.create(key) == 0],
            success=[tx.put(key, release.to_json()),
                     tx.put(self.key("apps", app, "current"), str(release.version).encode())],
            failure=[]))
        return bool(ok)

    async def set_formation(self, app: str, counts: dict[str, int]) -> None:
        await self.write({self.key("apps", app, "formation", t): str(n).encode()
                          for t, n in counts.items()})

    async def put_agent(self, record: AgentRecord) -> None:
        await self.write({self.key("agents", record.name): json.dumps(asdict(record)).encode()})

    def assignment_puts(self, items: dict[InstanceKey, Assigned]) -> dict[bytes, bytes]:
        return {self.key("assignments", k.app, k.id):
                json.dumps({"agent": a.agent, "release": a.release, "previous": a.previous}
                           if a.previous else {"agent": a.agent, "release": a.release}).encode()
                for k, a in items.items()}

    def assignment_keys(self, keys: list[InstanceKey]) -> list[bytes]:
        return [self.key("assignments", k.app, k.id) for k in keys]

    # ---- watch --------------------------------------------------------------

    async def watch_apps(self, after_revision: int, on_change: Callable[[], None]) -> None:
        """Call on_change for every change under apps/ made after after_revision; never returns.

        A lost watch (etcd restart, compaction) is re-established and reported as a change,
        so the caller re-reads: nothing is missed, at worst something is read twice.
        """
        revision = after_revision
        delay = 0.2
        while True:
            try:
                watch = await self._call("watch", lambda c: c.watch_prefix(
                    self.key("apps", ""), start_revision=revision + 1))
                delay = 0.2
                async for event in watch:
                    revision = max(revision, event.kv.mod_revision)
                    on_change()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: re-read and re-watch
                log.info("etcd watch lost (%s); re-establishing", e)
                on_change()
                if isinstance(e, aetcd.exceptions.RevisionCompactedError):
                    revision = e.compacted_revision - 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
