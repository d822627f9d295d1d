"""This replica's candidacy in etcd (the recipe and the rules: leadership.py): a lease kept
alive, a key under it, and a watch of every candidate, so each replica knows who leads.

A candidacy ends when its lease cannot be renewed in time or its key goes; the replica then
stands again with a new lease (a new key, a new epoch if it is elected again). A replica
that starts under the name of a key that exists (itself, killed and restarted) takes that
key's place at once instead of waiting for its lease to end; the replica it replaced, if it
still runs, learns that its key went and stops (two replicas may not share a name).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils

from common.aio import wait_event
from scheduler import lease as lease_keeper
from scheduler.etcdconn import ETCD_ERRORS, Connection, StoreUnavailable
from scheduler.leadership import (
    Candidate,
    Validity,
    candidate_value,
    leader_of,
    parse_candidate,
)
from scheduler.store import Fence

log = logging.getLogger("scheduler.election")


class Election:
    def __init__(self, conn: Connection, prefix: str, name: str, address: str,
                 ttl: int) -> None:
        self.conn = conn
        self.dir = f"{prefix.rstrip('/')}/schedulers/".encode()
        self.name, self.address, self.ttl = name, address, ttl
        self.validity = Validity(float(ttl))
        self.candidates: dict[bytes, Candidate] = {}
        self.me: Candidate | None = None
        self.lease = 0
        self.replaced = False
        self._revision = 0  # of the watch's last read of the candidates
        self._orphaned: bytes | None = None  # its key, gone while it stood
        self._event = asyncio.Event()

    # ---- what others ask ---------------------------------------------------------------

    @property
    def leader(self) -> Candidate | None:
        return leader_of(self.candidates.values())

    def leading(self) -> bool:
        """This replica leads, and its lease is sure to be alive (by its own clock)."""
        me, leader = self.me, self.leader
        return me is not None and leader is not None and leader.key == me.key \
            and self.validity.valid(time.monotonic())

    def healthy(self) -> bool:
        """In contact with etcd: a candidate whose lease is alive."""
        return self.me is not None and self.validity.valid(time.monotonic())

    async def changed(self, timeout: float | None = None) -> None:
        """Return at the next change of the candidates or of this one's lease (or timeout)."""
        await wait_event(self._event, timeout)

    def _signal(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    # ---- standing ----------------------------------------------------------------------

    async def campaign(self) -> Candidate:
        """A new lease and a key under it; a key of this name that exists (this replica's
        own, from before a restart) is replaced in the same transaction, which also reads
        every candidate: this replica's view includes each one older than itself, so it
        never takes itself for the leader while an older one stands."""
        self._orphaned = None  # its own new key, when the watch sees it, replaces nothing
        sent = time.monotonic()  # the lease lasts at least ttl from the request, not the answer
        lease = await self.conn.call("lease", lambda c: c.lease(self.ttl))
        try:
            return await self._stand_with(lease.id, float(lease.ttl), sent)
        except BaseException:  # a key no one would keep alive must not block the election
            await self._revoke(lease.id)
            raise

    async def _stand_with(self, lease: int, ttl: float, sent: float) -> Candidate:
        self.lease = lease
        self.validity = Validity(float(self.ttl))
        self.validity.renewed(sent, ttl)
        key = self.dir + f"{lease:x}".encode()
        now = time.time()
        value = candidate_value(self.name, self.address, now)
        others, _ = await self._range()
        mine = [c.key for c in others.values() if c.name == self.name and c.key != key]
        tx = self.conn.client.transactions
        ok, responses = await self.conn.call("txn", lambda c: c.transaction(
            compare=[tx.create(key) == 0],
            success=[*(tx.delete(k) for k in mine), tx.put(key, value, lease=lease),
                     tx.get(self.dir, aetcd.utils.prefix_range_end(self.dir))], failure=[]))
        if not ok:
            raise StoreUnavailable(f"candidacy key {key.decode()} exists already")
        if mine:
            log.info("took the place of the earlier candidacy of %s (%d key)", self.name,
                     len(mine))
        seen = self._candidates(kv for _, kv in responses[-1])
        self.me = seen.get(key)
        if self.me is None:
            raise StoreUnavailable(f"candidacy key {key.decode()} not read back")
        self.candidates = seen  # every older candidate, as of its own key's creation
        self._signal()
        return self.me

    async def begin_term(self) -> Fence:
        """Write when this replica became leader into its key (`ctl schedulers` shows it),
        while the key is still its own; the fence of the term is that write's revision: a
        later term, even of the same candidacy, writes it again, and etcd refuses every
        write of this one from then on."""
        me = self.me
        if me is None:
            raise StoreUnavailable("no candidacy")
        value = candidate_value(self.name, self.address, me.joined, time.time())
        tx = self.conn.client.transactions
        ok, responses = await self.conn.call("txn", lambda c: c.transaction(
            compare=[tx.create(me.key) == me.revision],
            success=[tx.put(me.key, value, lease=self.lease), tx.get(me.key)], failure=[]))
        if not ok:
            raise StoreUnavailable("this scheduler's candidacy key went")
        return Fence(me.key, responses[-1][0][1].mod_revision)

    async def keep(self) -> None:
        """Renew the lease every ttl/4 (lease.py) until it is surely gone; then this
        candidacy is over."""
        try:
            await lease_keeper.keep(self.conn, self.lease, self.validity, self._signal)
        finally:
            self.validity.lost()
            self._drop_me()

    async def resign(self) -> None:
        """Give the lease back (its key goes with it), so another replica is elected at
        once rather than when the lease would end; best effort, briefly."""
        self.validity.lost()
        self._drop_me()
        lease, self.lease = self.lease, 0
        if lease:
            await self._revoke(lease)

    async def _revoke(self, lease: int) -> None:
        """End a lease (and its key) now; best effort, briefly."""
        with contextlib.suppress(*ETCD_ERRORS):
            await asyncio.wait_for(self.conn.call(
                "lease", lambda c: c.revoke_lease(lease)), 1.0)

    def _drop_me(self) -> None:
        """The candidacy is over: its key is no leader of this replica's view (it may still
        be in etcd until its lease ends; the watch says so if it is)."""
        if self.me is not None:
            self.candidates.pop(self.me.key, None)
        self.me = None
        self._signal()

    # ---- watching ----------------------------------------------------------------------

    async def _range(self) -> tuple[dict[bytes, Candidate], int]:
        """The candidates in etcd now, and the revision they were read at."""
        end = aetcd.utils.prefix_range_end(self.dir)

        async def read(c: aetcd.Client) -> Any:
            await c.connect()
            try:
                return await c.kvstub.Range(aetcd.rpc.RangeRequest(key=self.dir, range_end=end),
                                            timeout=self.conn.timeout, metadata=c.metadata)
            except aetcd.rpc.AioRpcError as e:
                aetcd.exceptions._handle_exception(e)
        resp = await self.conn.call("load", read)
        return self._candidates(resp.kvs), resp.header.revision

    def _candidates(self, kvs: Iterable[Any]) -> dict[bytes, Candidate]:
        return {c.key: c for c in map(self._candidate, kvs) if c is not None}

    def _candidate(self, kv: Any) -> Candidate | None:
        """A candidacy: a key named after the lease it is under (so it ends with that lease:
        a key someone wrote without one, which would never go, is none), holding a valid
        value (leadership.py)."""
        if kv.lease <= 0 or kv.key != self.dir + f"{kv.lease:x}".encode():
            return None
        return parse_candidate(kv.key, kv.value, kv.create_revision)

    async def list(self) -> list[Candidate]:
        """Every candidate as etcd has them now, the leader first."""
        return sorted((await self._range())[0].values(), key=lambda c: c.revision)

    async def observe(self) -> None:
        """Keep `candidates` as etcd has them; never returns."""
        delay = 0.2
        while True:
            try:
                now, self._revision = await self._range()
                self._set(now)
                watch = await self.conn.call("watch", self._watch)
                delay = 0.2
                async for event in watch:
                    kv = event.kv
                    if event.kind == "DELETE":
                        self._gone(kv.key)
                    else:
                        found = self._candidate(kv)
                        if found is not None:
                            self.candidates[kv.key] = found
                            if self._orphaned and found.name == self.name \
                                    and found.key != self._orphaned:
                                self.replaced = True  # its key went, and one of its name came
                            if self.me is not None and kv.key == self.me.key:
                                self.me = found
                    self._signal()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: watch again from a read
                log.info("watch of the candidates lost (%s); watching again", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _watch(self, c: aetcd.Client) -> Any:
        return await c.watch_prefix(self.dir, start_revision=self._revision + 1)

    def _set(self, found: dict[bytes, Candidate]) -> None:
        me = self.me
        # (a read older than its key, made while it stood, does not say its key went)
        if me is not None and me.key not in found and self._revision >= me.revision:
            self._gone(me.key, found)
        if self.me is not None:
            found.setdefault(self.me.key, self.me)
            self.me = found[self.me.key]
        self.candidates = found
        self._signal()

    def _gone(self, key: bytes, now: dict[bytes, Candidate] | None = None) -> None:
        """A key went: if it was this replica's own while its lease lives, someone took its
        place (another replica of its name: `replaced`) or deleted it; either way this
        candidacy is over."""
        self.candidates.pop(key, None)
        me = self.me
        if me is None or key != me.key:
            return
        self._orphaned = key
        others = (now or self.candidates).values()
        if any(c.name == self.name for c in others):
            self.replaced = True
        log.warning("this scheduler's candidacy key went%s", " (another replica named "
                    f"{self.name} took its place)" if self.replaced else "")
        self.validity.lost()
        self.me = None
