"""The election and the fence against a real etcd (the session's, each test under a prefix of
its own), in-process: who leads, that a deposed leader's writes are refused by etcd itself
(and leave nothing in its history), that a restarted replica takes its own key's place, and
that keys someone else wrote under the candidates' prefix are ignored."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from scheduler.election import Election
from scheduler.etcdconn import Connection
from scheduler.store import Conflict, NotLeader, Store, parse_endpoints


def run(test: Callable[[Connection, str], Awaitable[None]], etcd_url: str) -> None:
    async def main() -> None:
        conn = Connection(parse_endpoints(etcd_url))
        try:
            await asyncio.wait_for(test(conn, f"/election-{uuid.uuid4().hex[:8]}"), 30)
        finally:
            await conn.close()
    asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


def test_the_first_candidate_leads_and_the_next_leads_once_it_resigns(etcd_url):
    async def test(conn: Connection, prefix: str) -> None:
        a = Election(conn, prefix, "a", "10.0.0.1:7070", 2)
        b = Election(conn, prefix, "b", "10.0.0.2:7070", 2)
        watchers = [asyncio.create_task(e.observe()) for e in (a, b)]
        keepers = []
        try:
            await a.campaign()
            await b.campaign()
            keepers = [asyncio.create_task(e.keep()) for e in (a, b)]
            await until(lambda: b.leader is not None and b.leader.name == "a")
            assert a.leading() and not b.leading()
            assert [c.name for c in await b.list()] == ["a", "b"]
            assert a.me and b.me and a.me.revision < b.me.revision  # epochs order leaders
            await a.resign()  # its key goes with its lease: b leads at once
            await until(b.leading, 5)
            assert not a.leading() and a.me is None
        finally:
            for t in watchers + keepers:
                t.cancel()
            await asyncio.gather(*watchers, *keepers, return_exceptions=True)
            await b.resign()
    run(test, etcd_url)


def test_a_deposed_leaders_writes_are_refused_by_etcd_and_leave_no_history(etcd_url):
    async def test(conn: Connection, prefix: str) -> None:
        a = Election(conn, prefix, "a", "10.0.0.1:7070", 2)
        await a.campaign()
        fenced = Store(conn, prefix).fenced(await a.begin_term())
        key = fenced.key("apps", "shop", "formation", "web")
        written = await fenced.write({key: b"3"})
        assert written[key] > 0
        with pytest.raises(Conflict):  # a guarded write that lost its race is a Conflict still
            await fenced.write({key: b"4"}, expected={key: 1})
        await a.resign()  # deposed: its key is gone
        before = await _revision(conn, key)
        for attempt in (lambda: fenced.write({key: b"5"}),
                        lambda: fenced.write({}, [key]),
                        lambda: fenced.delete_agent("agent-1")):
            with pytest.raises(NotLeader):
                await attempt()
        assert await _revision(conn, key) == before  # nothing reached etcd's history
        value = await conn.call("load", lambda c: c.get(key))
        assert value.value == b"3"
        # A new candidacy of the same replica is a new epoch: the old fence stays refused.
        await a.campaign()
        assert (await a.begin_term()).revision > fenced.fence.revision  # type: ignore[union-attr]
        with pytest.raises(NotLeader):
            await fenced.write({key: b"6"})
        await a.resign()
    run(test, etcd_url)


async def _revision(conn: Connection, key: bytes) -> int:
    """etcd's current revision (a refused transaction does not move it)."""
    return (await conn.call("load", lambda c: c.get(key))).header.revision


def test_a_restarted_replica_takes_its_own_keys_place_and_the_one_replaced_knows(etcd_url):
    async def test(conn: Connection, prefix: str) -> None:
        old = Election(conn, prefix, "s1", "10.0.0.1:7070", 5)
        other = Election(conn, prefix, "s2", "10.0.0.2:7070", 5)
        watcher = asyncio.create_task(old.observe())
        try:
            await old.campaign()
            await other.campaign()
            new = Election(conn, prefix, "s1", "10.0.0.1:7071", 5)  # same name: restarted
            await new.campaign()
            names = [c.name for c in await new.list()]
            assert names == ["s2", "s1"]  # the old key went: s2 leads now, not after 5 s
            await until(lambda: old.replaced)
            assert old.me is None and not old.leading()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for e in (old, other):
                await e.resign()
    run(test, etcd_url)


def test_keys_that_are_not_candidacies_are_ignored(etcd_url):
    async def test(conn: Connection, prefix: str) -> None:
        a = Election(conn, prefix, "a", "10.0.0.1:7070", 2)
        junk = {b"0": b"not json", b"1": b'{"name": "x y", "address": "h:1"}',
                b"2": b'{"name": "n", "address": "no port"}', b"3": b"[1, 2]",
                b"4": b'{"name": "n", "address": "h:1", "joined": NaN}',
                b"5": b'{"name": "n", "address": "h:1"}' + b" " * 2000,
                # a valid value, but under no lease: it would never go, and would lead forever
                b"6": b'{"name": "ghost", "address": "h:1"}'}
        for k, v in junk.items():  # written before a: lower revisions, yet never leaders
            await Store(conn, prefix).write({a.dir + k: v})
        await a.campaign()
        found = await a.list()
        assert [c.name for c in found] == ["a"]
        await a.resign()
    run(test, etcd_url)


def test_a_late_renewal_pauses_the_leader_and_the_same_candidacy_leads_again(etcd_url):
    """A renewal that comes too late (etcd electing its own leader, a slow disk) makes the
    leader stop at once; the lease and its key being alive, the next renewal makes the same
    candidacy lead again, with the same epoch: no new election, no waiting out a ttl."""
    async def test(conn: Connection, prefix: str) -> None:
        a = Election(conn, prefix, "a", "10.0.0.1:7070", 2)
        watcher = asyncio.create_task(a.observe())
        await a.campaign()
        keeper = asyncio.create_task(a.keep())
        try:
            await until(a.leading)
            assert a.me is not None
            epoch = a.me.revision
            a.validity.lost()  # as if the renewals had not come in time
            assert not a.leading() and not a.healthy()
            await until(a.leading, 5)
            assert a.me is not None and a.me.revision == epoch and not keeper.done()
        finally:
            for t in (watcher, keeper):
                t.cancel()
            await asyncio.gather(watcher, keeper, return_exceptions=True)
            await a.resign()
    run(test, etcd_url)
