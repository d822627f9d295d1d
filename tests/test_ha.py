"""A highly available scheduler, on the multi-host harness: three replicas (one leads, elected
through etcd), three agents, a three-member etcd. The leader is killed, cut off and frozen;
another leads within leader_ttl + 2 s, the old one's writes and pushes are refused, and no
instance restarts. One cluster serves the whole module; each test leaves three healthy
replicas behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from ctl.client import Client
from ctl.localcluster import free_port
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import Cluster, wait_for
from tests.cluster.harness import EXAMPLES, default_mode
from tests.cluster.traffic import start_lb

LEADER_TTL = 2
AGENT_TTL = 4.0  # short: a deposed leader that went on acting would mark agents down


@pytest.fixture(scope="module")
def ha(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("ha")
    (tmp / "Procfile").write_text("worker: sleep 100000\n")
    with Cluster(agents=3, schedulers=3, etcd_members=3, leader_ttl=LEADER_TTL,
                 agent_ttl=AGENT_TTL, mode=default_mode(), workdir=str(tmp)) as c:
        c.ctl("deploy", str(tmp / "Procfile"))
        c.ctl("scale", "worker=3", "--wait", "--timeout", "20")
        yield c


def pids(c: Cluster) -> dict[str, int]:
    return {i: inst.pid for i, inst in c.running().items()}


def workers(n: int) -> set[str]:
    return {f"worker.{i}" for i in range(1, n + 1)}


def client(c: Cluster, *names: str, role: str = "operator") -> Client:
    """A client of the replicas named (all when none is), as ROLE."""
    addresses = [c.scheduler_address(n) for n in names or c.scheduler_names]
    return Client(",".join(addresses), c.tls_for(role, "tester" if role == "operator" else role),
                  timeout=10)


def new_leader(c: Cluster, old: str, since: float) -> tuple[str, float]:
    """The replica other than `old` that leads, and how long after `since` it did."""
    def other() -> str | None:
        for name in c.scheduler_names:
            if name != old and c.scrape(name).get("formation_scheduler_leader") == 1:
                return name
        return None
    name = str(wait_for(other, LEADER_TTL + 10, interval=0.05, what="another leader"))
    return name, time.monotonic() - since


def replaced(c: Cluster, leader: str, since: float, fault: str) -> None:
    """Another replica leads within ttl + 2 s of the fault, and places a worker.4."""
    successor, took = new_leader(c, leader, since)
    assert took <= LEADER_TTL + 2, f"{successor} led {took:.2f}s after the {fault}"
    others = [n for n in c.scheduler_names if n != leader]
    client(c, *others).scale("default", {"worker": 4})
    c.wait_running(workers(4), timeout=15)


def marked_down(changes: list[tuple[str, str, bytes, int]]) -> list[str]:
    """The events feeds in etcd's history that say an agent went down."""
    return [v.decode() for _, key, v, _ in changes
            if key.endswith("/events") and v and b"down: no heartbeat" in v]


def all_healthy(c: Cluster) -> None:
    """Every replica stands again, healthy, and exactly one leads."""
    def ok() -> bool:
        found = client(c).schedulers()
        return sorted(r.name for r in found) == sorted(c.scheduler_names) \
            and all(r.healthy for r in found) and sum(r.leader for r in found) == 1
    wait_for(ok, 20, interval=0.2, what="three healthy replicas, one leading")


def steady(c: Cluster, expected: dict[str, int], seconds: float = 1.5) -> None:
    """The instances stay exactly these processes, each once, for a while (nothing must
    happen, so there is no condition to wait for: the window is the check)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert pids(c) == expected
        assert c.copies() == dict.fromkeys(expected, 1)
        time.sleep(0.1)


def test_schedulers_lists_the_replicas_and_any_replica_serves_ctl(ha):
    all_healthy(ha)
    listed = json.loads(ha.ctl("schedulers", "--json").stdout)
    assert [set(r) for r in listed] == [{"name", "address", "leader", "since", "healthy"}] * 3
    leader = ha.leader()
    assert listed[0]["leader"] and listed[0]["name"] == leader
    assert [r["leader"] for r in listed[1:]] == [False, False]
    assert {r["address"] for r in listed} == {ha.scheduler_address(n) for n in ha.scheduler_names}
    assert all(r["healthy"] and r["since"] <= time.time() for r in listed)
    for name in ha.scheduler_names:  # one gauge says it, on each replica
        assert ha.scrape(name)["formation_scheduler_leader"] == (name == leader)
    # A follower forwards: as the caller (the author is the operator, not the replica), and
    # only what the caller may do (a viewer may read through it, not scale).
    follower = next(n for n in ha.scheduler_names if n != leader)
    via = client(ha, follower)
    via.scale("default", {"worker": 3}, author="ignored")
    assert via.scales("default")[0].author == "operator tester"
    assert len(client(ha, follower, role="viewer").instances("default")) == 3
    with pytest.raises(Exception, match="viewer may not scale"):
        client(ha, follower, role="viewer").scale("default", {"worker": 4})
    assert ha.scrape(follower)['formation_scheduler_forwarded_calls_total{method="Scale"}'] >= 1


def test_leader_killed_a_scale_at_once_succeeds_and_runs_within_the_ttl(ha):
    all_healthy(ha)
    before = pids(ha)
    n = len(before)
    for _ in range(2):  # bench/leader.py measures ten
        leader = ha.leader()
        changes = {n: ha.scrape(n).get("formation_scheduler_leader_changes_total", 0)
                   for n in ha.scheduler_names if n != leader}
        killed = time.monotonic()
        ha.parts.pop(leader).stop(signal.SIGKILL)
        ha.ctl("scale", f"worker={n + 1}", timeout=30)  # ctl is given all three addresses
        ha.wait_running(workers(n + 1), timeout=LEADER_TTL + 10)
        took = time.monotonic() - killed
        assert took <= LEADER_TTL + 2, f"running {took:.2f}s after the kill"
        now = pids(ha)
        assert {i: now[i] for i in before} == before  # no instance restarted
        for name, seen in changes.items():  # each survivor counted the change it saw
            assert ha.scrape(name)["formation_scheduler_leader_changes_total"] == seen + 1
        before, n = now, n + 1
        ha.start_scheduler(leader)
        all_healthy(ha)
    ha.ctl("scale", "worker=3", "--wait", "--timeout", "20")


@pytest.mark.skipif(default_mode() != "netns", reason="cutting a host off needs namespaces")
def test_leader_cut_off_is_replaced_its_writes_refused_and_it_follows_once_healed(ha):
    all_healthy(ha)
    ha.wait_running(workers(3))
    before = pids(ha)
    leader = ha.leader()
    start = ha.revision()
    cut = time.monotonic()
    ha.cut(leader)
    try:
        replaced(ha, leader, cut, "cut")
        # Held past the agents' ttl: had the old leader gone on acting, it would have marked
        # every agent down (written to etcd) and placed their instances again.
        while time.monotonic() - cut < AGENT_TTL + 2:
            time.sleep(0.1)
    finally:
        ha.heal(leader)
    wait_for(lambda: ha.scrape(leader)["formation_scheduler_leader"] == 0, 10,
             what="the old leader to say it follows")
    all_healthy(ha)
    steady(ha, {**before, "worker.4": pids(ha)["worker.4"]})
    # etcd's history: no agent was marked down, no instance moved, the original assignments
    # were never written again (a deposed leader's writes, had any reached etcd, were refused).
    changes = ha.history(start)
    assert not marked_down(changes)
    assert not [k for _, k, _, _ in changes if k.split("/")[-1] in before], changes
    ha.ctl("scale", "worker=3", "--wait", "--timeout", "20")


def test_leader_frozen_for_three_ttls_pushes_nothing_stale_when_it_wakes(ha):
    all_healthy(ha)
    ha.wait_running(workers(3))
    before = pids(ha)
    leader = ha.leader()
    start = ha.revision()
    frozen = time.monotonic()
    ha.freeze(leader)
    try:
        replaced(ha, leader, frozen, "freeze")
        while time.monotonic() - frozen < 3 * LEADER_TTL:
            time.sleep(0.05)
    finally:
        ha.thaw(leader)
    # It wakes believing it led with the world of three workers: a list it pushed now would
    # stop worker.4. It pushes none (its lease is over by its own clock), and an agent would
    # ignore one of its older epoch anyway.
    expected = {**before, "worker.4": pids(ha)["worker.4"]}
    steady(ha, expected, seconds=2.0)
    wait_for(lambda: ha.scrape(leader)["formation_scheduler_leader"] == 0, 10,
             what="the old leader to say it follows")
    all_healthy(ha)
    # Nor did it act on its stale clock: its agents' heartbeats stopped 3 ttls ago, yet no
    # agent was marked down in etcd.
    assert not marked_down(ha.history(start))
    ha.ctl("scale", "worker=3", "--wait", "--timeout", "20")


def test_forwarding_believes_a_named_caller_only_from_a_scheduler(ha):
    """What a forwarding replica sends (formation-caller, formation-forwarded) is metadata
    anyone can send: only a scheduler's certificate makes the leader believe the caller it
    names, and a forwarded call is never forwarded again."""
    all_healthy(ha)
    leader = ha.leader()
    follower = next(n for n in ha.scheduler_names if n != leader)
    scale = pb.ScaleRequest(app="default", counts={"worker": 3})
    operator = (("formation-caller", "spiffe://formation/operator/mallory"),)

    def call(address: str, role: str, name: str, metadata=()) -> grpc.StatusCode:
        with ha.channel(ha.scheduler_address(address), role=role, name=name) as ch:
            try:
                pbg.ControlStub(ch).Scale(scale, metadata=metadata, timeout=10)
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                return e.code()
    # A viewer claiming to forward for an operator is still a viewer, at the leader and at a
    # follower (which checks before it forwards).
    assert call(leader, "viewer", "v", operator) == grpc.StatusCode.PERMISSION_DENIED
    assert call(follower, "viewer", "v", operator) == grpc.StatusCode.PERMISSION_DENIED
    # A scheduler is judged as the caller it names; naming none, as itself (not allowed).
    assert call(leader, "scheduler", follower) == grpc.StatusCode.PERMISSION_DENIED
    assert call(leader, "scheduler", follower, operator) == grpc.StatusCode.OK
    bogus = (("formation-caller", "spiffe://formation/root/x"),)  # no such role: nobody
    assert call(leader, "scheduler", follower, bogus) == grpc.StatusCode.UNAUTHENTICATED
    # Marked as forwarded already, a call to a follower is refused (UNAVAILABLE, nothing done),
    # not sent on: no loops between replicas that disagree on who leads.
    forwarded = (("formation-forwarded", "x"), *operator)
    assert call(follower, "scheduler", leader, forwarded) == grpc.StatusCode.UNAVAILABLE


def test_formation_lb_follows_the_new_leader(ha, tmp_path):
    """formation-lb, given every replica's address, keeps following the endpoints when the
    leader dies: a new instance placed by the next leader gets requests."""
    all_healthy(ha)
    shutil.copy(os.path.join(EXAMPLES, "web.py"), ha.workdir)
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    ha.ctl("deploy", str(tmp_path / "Procfile"), app="site")
    ha.ctl("scale", "web=2", "--wait", "--timeout", "20", app="site")
    port = free_port()
    lb = start_lb(ha, port, app="site")
    try:
        def answered_by() -> set[str]:
            seen = set()
            for _ in range(12):
                with contextlib.suppress(OSError), \
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    seen.add(r.read().decode().split()[-1])
            return seen
        wait_for(lambda: answered_by() == {"web.1", "web.2"}, 20, interval=0.2,
                 what="both instances behind formation-lb")
        leader = ha.leader()
        ha.parts.pop(leader).stop(signal.SIGKILL)
        ha.ctl("scale", "web=3", app="site", timeout=30)
        wait_for(lambda: "web.3" in answered_by(), 20, interval=0.2,
                 what="web.3, placed by the new leader, behind formation-lb")
        ha.start_scheduler(leader)
        all_healthy(ha)
    finally:
        lb.stop()
        ha.ctl("scale", "web=0", "--wait", "--timeout", "20", app="site")
