"""Failure handling on a real multi-host cluster (docs/failure-model.md): lost, frozen, cut-off and
returning agents, at_most_once fencing, scheduler and etcd restarts, capacity, drain.

The truth is read from the hosts (/proc, by network namespace), not only from the scheduler.
"""
from __future__ import annotations

import signal
import threading
from collections import Counter

import pytest

from common.states import InstanceState, agent_word
from tests.cluster import procs, wait_for
from tests.cluster.harness import default_mode

SLEEPY = "svc: sleep 100000\nworker: sleep 100000\nclock: sleep 100000\n"
needs_netns = pytest.mark.skipif(default_mode() != "netns",
                                 reason="cutting a host off needs network namespaces")


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "Procfile").write_text(SLEEPY)
    (tmp_path / "formation.toml").write_text(
        "[svc]\nstop_timeout = 2\n[clock]\nat_most_once = true\nstop_timeout = 2\n")
    return tmp_path


def deploy(c, app_dir, *counts: str) -> dict:
    c.ctl("deploy", str(app_dir / "Procfile"))
    c.ctl("scale", *counts)
    want = set()
    for spec in counts:
        t, n = spec.split("=")
        want |= {f"{t}.{i}" for i in range(1, int(n) + 1)}
    return c.wait_running(want, timeout=20)


def exactly_once(c, ids) -> bool:
    copies = c.copies()
    return set(copies) == set(ids) and all(n == 1 for n in copies.values())


def on_agent(c, name: str) -> set[str]:
    return {i for i, inst in c.instances().items() if inst.agent == name}


def moved_off(c, name: str, ids: set[str]) -> bool:
    inst = c.instances()
    return set(inst) == ids and all(i.state == InstanceState.RUNNING and i.agent != name
                                    for i in inst.values())


def agent_state(c, name: str) -> str:
    """The state word `ctl agents` shows."""
    return agent_word(next(a.state for a in c.client.agents() if a.name == name))


def test_killed_agent_is_marked_down_and_its_instances_move(hosts_cluster, app_dir):
    c = hosts_cluster(agents=3, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=6"))
    lost = on_agent(c, "agent-2")
    assert lost
    c.kill_agent("agent-2")
    wait_for(lambda: moved_off(c, "agent-2", ids), 15, what="instances to move")
    assert agent_state(c, "agent-2") == "down"
    assert "down" in c.ctl("agents").stdout
    rows = c.ps()
    assert all(r["agent"] != "agent-2" and r["state"] == "running" for r in rows)
    wait_for(lambda: exactly_once(c, ids), 10, what="each instance exactly once")
    assert "agent-2" not in c.truth()


def test_frozen_agent_is_replaced_and_stops_its_copies_when_thawed(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=4"))
    c.freeze("agent-1")
    wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
    assert agent_state(c, "agent-1") == "down"
    c.thaw("agent-1")
    wait_for(lambda: agent_state(c, "agent-1") == "ready", 15, what="agent-1 to come back")
    wait_for(lambda: exactly_once(c, ids), 15, what="each instance exactly once")


@needs_netns
def test_cut_off_agent_keeps_its_instances_until_it_reconnects(hosts_cluster, app_dir):
    c = hosts_cluster(agents=3, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=6"))
    cut = on_agent(c, "agent-2")
    c.cut("agent-2")
    wait_for(lambda: moved_off(c, "agent-2", ids), 15, what="instances to move")
    # Availability first: the cut-off host still runs its copies.
    assert set(c.truth().get("agent-2", {})) == cut
    c.heal("agent-2")
    wait_for(lambda: exactly_once(c, ids) and "agent-2" not in c.truth(), 20,
             what="the moved copies to stop after healing")
    wait_for(lambda: agent_state(c, "agent-2") == "ready", 15, what="agent-2 to reconnect")


class Sampler(threading.Thread):
    """Samples how many copies of each instance run, from /proc, until stopped."""

    def __init__(self, cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.most: Counter[str] = Counter()
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for iid, n in self.cluster.copies().items():
                self.most[iid] = max(self.most[iid], n)
            self.samples += 1
            self.done.wait(0.02)

    def stop(self) -> None:
        self.done.set()
        self.join()


@needs_netns
def test_at_most_once_instances_are_fenced_before_they_move(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "clock=4", "svc=2"))
    assert on_agent(c, "agent-1") & {"clock.1", "clock.2", "clock.3", "clock.4"}
    sampler = Sampler(c)
    sampler.start()
    try:
        c.cut("agent-1")
        wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
        # The fenced clocks are gone from agent-1; its svc copy still runs there.
        assert not {i for i in c.truth().get("agent-1", {}) if i.startswith("clock")}
        c.heal("agent-1")
        wait_for(lambda: exactly_once(c, ids), 20, what="each instance exactly once")
    finally:
        sampler.stop()
    assert sampler.samples > 20
    for iid in ("clock.1", "clock.2", "clock.3", "clock.4"):
        assert sampler.most[iid] == 1, f"{iid} ran twice at once"
    assert "stopped at_most_once instances" in c.log("agent-1")


def test_a_frozen_agents_at_most_once_instances_are_killed_by_its_guardian(
        hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "clock=4", "svc=2"))
    frozen = {i for i in on_agent(c, "agent-1") if i.startswith("clock")}
    assert frozen
    sampler = Sampler(c)
    sampler.start()
    try:
        c.freeze("agent-1")  # it cannot fence anything itself now
        wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
        c.thaw("agent-1")
        wait_for(lambda: exactly_once(c, ids), 20, what="each instance exactly once")
    finally:
        sampler.stop()
    for iid in frozen:
        assert sampler.most[iid] == 1, f"{iid} ran twice at once"


def test_agent_restarted_with_the_same_name_registers_again_without_duplicates(
        hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=4"))
    before = {i: inst.pid for i, inst in c.instances().items()}
    mine = on_agent(c, "agent-2")
    c.kill_agent("agent-2")
    c.start_agent("agent-2")  # back before its ttl: its instances start again on it
    wait_for(lambda: exactly_once(c, ids) and on_agent(c, "agent-2") == mine and
             set(c.running()) == ids, 15, what="agent-2's instances to run again on it")
    assert len(c.client.agents()) == 2
    for i in ids - mine:
        assert c.instances()[i].pid == before[i]


def test_pending_until_capacity_appears_without_moving_running_ones(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, capacity=2, spare_hosts=1, workdir=str(app_dir))
    c.ctl("deploy", str(app_dir / "Procfile"))
    c.ctl("scale", "svc=6")
    wait_for(lambda: len(c.running()) == 4, 15, what="4 of 6 to run")
    rows = {r["id"]: r for r in c.ps()}
    assert sorted(i for i, r in rows.items() if r["state"] == "pending") == ["svc.5", "svc.6"]
    assert all(rows[i]["agent"] is None for i in ("svc.5", "svc.6"))
    assert "pending" in c.ctl("ps").stdout
    pids = {i: inst.pid for i, inst in c.running().items()}
    c.start_agent("agent-3")  # a new machine joins
    wait_for(lambda: len(c.running()) == 6, 15, what="pending instances to be placed")
    assert on_agent(c, "agent-3") == {"svc.5", "svc.6"}
    assert {i: c.running()[i].pid for i in pids} == pids


def test_scheduler_restart_restarts_nothing_and_loses_no_acknowledged_scale(
        hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    deploy(c, app_dir, "svc=4", "worker=2")
    pids = {i: inst.pid for i, inst in c.instances().items()}
    c.ctl("scale", "svc=5")  # acknowledged, then the scheduler dies at once
    c.stop_scheduler(signal.SIGKILL)
    down = c.ctl("scale", "svc=7", check=False)
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
    c.start_scheduler()
    want = {f"svc.{n}" for n in range(1, 6)} | {"worker.1", "worker.2"}
    running = c.wait_running(want, timeout=20)
    assert {i: running[i].pid for i in pids} == pids
    assert all(procs.alive(p) for p in pids.values())
    desired = {t.type: t.desired for t in c.client.formation("default").types}
    assert desired == {"svc": 5, "worker": 2, "clock": 0}


def test_etcd_restart_restarts_nothing(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    deploy(c, app_dir, "svc=4")
    pids = {i: inst.pid for i, inst in c.instances().items()}
    c.stop_etcd(0)
    refused = c.ctl("scale", "svc=6", check=False)
    assert refused.returncode == 1 and "etcd" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert {r["id"] for r in c.ps()} == set(pids)  # reads still answer from memory
    c.start_etcd(0)
    wait_for(lambda: c.ctl("scale", "svc=6", check=False).returncode == 0, 20,
             what="scale to work again")
    running = c.wait_running({f"svc.{n}" for n in range(1, 7)}, timeout=20)
    assert {i: running[i].pid for i in pids} == pids


def test_losing_one_of_three_etcd_members_changes_nothing(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, etcd_members=3, workdir=str(app_dir))
    deploy(c, app_dir, "svc=3")
    pids = {i: inst.pid for i, inst in c.instances().items()}
    c.stop_etcd(0, signal.SIGKILL)  # the member the scheduler talks to first
    wait_for(lambda: c.ctl("scale", "svc=5", check=False).returncode == 0, 20,
             what="scale to succeed on the remaining members")
    running = c.wait_running({f"svc.{n}" for n in range(1, 6)}, timeout=20)
    assert {i: running[i].pid for i in pids} == pids
    c.restart_scheduler()  # and a new scheduler recovers from the two members left
    assert {i: c.running()[i].pid for i in pids} == pids


def test_drain_starts_each_replacement_before_stopping_the_old_copy(hosts_cluster, app_dir):
    c = hosts_cluster(agents=3, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=6", "clock=1"))
    sampler = Sampler(c)
    lowest: Counter[str] = Counter({i: 1 for i in ids})
    sampler.start()
    try:
        mine = on_agent(c, "agent-1")
        assert mine
        out = c.ctl("drain", "agent-1")
        assert "draining" in out.stdout
        wait_for(lambda: agent_state(c, "agent-1") == "draining" or
                 agent_state(c, "agent-1") == "drained", 5)
        # never zero copies of a svc instance while it moves: sample the truth meanwhile
        def drained():
            copies = c.copies()
            for i in ids:
                if i.startswith("svc"):
                    lowest[i] = min(lowest[i], copies.get(i, 0))
            return agent_state(c, "agent-1") == "drained"
        wait_for(drained, 30, interval=0.02, what="agent-1 to be drained")
    finally:
        sampler.stop()
    assert all(n >= 1 for i, n in lowest.items() if i.startswith("svc")), lowest
    assert sampler.most["clock.1"] <= 1
    assert not on_agent(c, "agent-1") and "agent-1" not in c.truth()
    wait_for(lambda: exactly_once(c, ids), 10)
    assert "drained" in c.ctl("agents").stdout
    c.ctl("undrain", "agent-1")
    assert agent_state(c, "agent-1") == "ready"
    c.ctl("scale", "svc=9", "--wait", "--timeout", "20")
    assert on_agent(c, "agent-1")  # it takes new instances again
    bad = c.ctl("drain", "nosuch", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
