"""Failure handling on a real multi-host cluster (docs/failure-model.md): lost, frozen, cut-off and
returning agents, at_most_once fencing, scheduler and etcd restarts, capacity, drain.

The truth is read from the hosts (/proc, by network namespace), not only from the scheduler.
"""
from __future__ import annotations

import re
import signal
import time

import pytest

from common.states import InstanceState, agent_word
from tests.cluster import procs, wait_for
from tests.cluster.harness import default_mode
from tests.cluster.oracles import Sampler, events, once, second_copies, stubborn

CLOCKS = ("clock.1", "clock.2", "clock.3", "clock.4")
needs_netns = pytest.mark.skipif(default_mode() != "netns",
                                 reason="cutting a host off needs network namespaces")


@pytest.fixture
def app_dir(tmp_path):
    # clock (at_most_once) holds a per-id flock while it runs: a second copy anywhere exits
    # 97 and leaves its id in tmp_path/SECOND (tests/cluster/oracles.py).
    (tmp_path / "Procfile").write_text(
        "svc: sleep 100000\nworker: sleep 100000\n"
        f"clock: {once(tmp_path, 'sleep 100000')}\n")
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


def never_twice(c, app_dir) -> None:
    """The flock oracle: no copy of a clock ever found another copy of itself running."""
    assert second_copies(app_dir) == [], "a second copy of an at_most_once instance started"
    for name in c.agent_names:
        assert "exited with code 97" not in c.log(name), name


def test_killed_agent_is_marked_down_and_its_instances_move(hosts_cluster, app_dir):
    c = hosts_cluster(agents=3, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=6"))
    lost = on_agent(c, "agent-2")
    assert lost
    placed = c.scrape("scheduler")["formation_placements_total"]
    c.kill_agent("agent-2")
    wait_for(lambda: moved_off(c, "agent-2", ids), 15, what="instances to move")
    assert agent_state(c, "agent-2") == "down"
    assert "down" in c.ctl("agents").stdout
    s = c.scrape("scheduler")
    assert s['formation_agents{state="down"}'] == 1 and s['formation_agents{state="ready"}'] == 2
    assert s["formation_placements_total"] >= placed + len(lost)  # migrations count
    rows = c.ps()
    assert all(r["agent"] != "agent-2" and r["state"] == "running" for r in rows)
    wait_for(lambda: exactly_once(c, ids), 10, what="each instance exactly once")
    assert "agent-2" not in c.truth()


def test_frozen_agent_is_replaced_and_stops_its_copies_when_thawed(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=4"))
    mine = {i: inst.pid for i, inst in c.instances().items() if inst.agent == "agent-1"}
    assert mine
    c.freeze("agent-1")
    wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
    assert agent_state(c, "agent-1") == "down"
    # A hung agent's instances keep running until it wakes up: the same processes, there.
    assert all(procs.alive(p) for p in mine.values()), mine
    assert {i: sorted(p) for i, p in c.truth().get("agent-1", {}).items()} == \
        {i: [p] for i, p in mine.items()}
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


@needs_netns
def test_at_most_once_instances_are_fenced_before_they_move(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "clock=4", "svc=2"))
    fenced = on_agent(c, "agent-1") & set(CLOCKS)
    kept = {i: inst.pid for i, inst in c.instances().items()
            if inst.agent == "agent-1" and i.startswith("svc")}
    assert fenced and kept
    with Sampler(c) as sampler:
        c.cut("agent-1")
        wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
        # The fenced clocks are gone from agent-1; its svc copy still runs there.
        on_host = c.truth().get("agent-1", {})
        assert not {i for i in on_host if i.startswith("clock")}
        assert {i: p for i, [p] in on_host.items()} == kept
        c.heal("agent-1")
        wait_for(lambda: exactly_once(c, ids), 20, what="each instance exactly once")
    assert sampler.samples > 20
    for iid in CLOCKS:
        assert sampler.most[iid] == 1, f"{iid}: at most {sampler.most[iid]} copies seen"
    never_twice(c, app_dir)
    assert "stopped at_most_once instances" in c.log("agent-1")


def test_a_frozen_agents_at_most_once_instances_are_killed_by_its_guardian(
        hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "clock=4", "svc=2"))
    frozen = {i for i in on_agent(c, "agent-1") if i.startswith("clock")}
    kept = {i: inst.pid for i, inst in c.instances().items()
            if inst.agent == "agent-1" and i.startswith("svc")}
    assert frozen and kept
    with Sampler(c) as sampler:
        c.freeze("agent-1")  # it cannot fence anything itself now
        # Before the thaw: the guardian has SIGKILLed the frozen agent's clocks on its host...
        wait_for(lambda: not frozen & set(c.truth().get("agent-1", {})), 10,
                 what="the guardian to kill agent-1's clocks")
        assert procs.alive(c.parts["agent-1"].pid)  # (still frozen, not dead)
        wait_for(lambda: moved_off(c, "agent-1", ids), 15, what="instances to move")
        # ...while its ordinary instances keep running there, the same processes.
        assert {i: p for i, [p] in c.truth().get("agent-1", {}).items()} == kept
        c.thaw("agent-1")
        wait_for(lambda: exactly_once(c, ids), 20, what="each instance exactly once")
    for iid in CLOCKS:
        assert sampler.most[iid] == 1, f"{iid}: at most {sampler.most[iid]} copies seen"
    never_twice(c, app_dir)


def test_agent_restarted_with_the_same_name_registers_again_without_duplicates(
        hosts_cluster, app_dir):
    # A 10 s ttl: coming back "before the ttl" must not race a loaded machine.
    c = hosts_cluster(agents=2, agent_ttl=10.0, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=4"))
    before = {i: inst.pid for i, inst in c.instances().items()}
    mine = on_agent(c, "agent-2")
    assert mine
    c.kill_agent("agent-2")  # its guardian kills its instances
    wait_for(lambda: not any(procs.alive(before[i]) for i in mine), 10,
             what="the killed agent's instances to die with it")
    c.start_agent("agent-2")  # back before its ttl: its instances start again on it
    wait_for(lambda: exactly_once(c, ids) and on_agent(c, "agent-2") == mine and
             set(c.running()) == ids, 15, what="agent-2's instances to run again on it")
    assert len(c.client.agents()) == 2
    assert agent_state(c, "agent-2") == "ready"
    assert c.scrape("scheduler").get('formation_agents{state="down"}', 0) == 0
    after = c.instances()
    for i in ids - mine:
        assert after[i].pid == before[i]
    for i in mine:
        assert after[i].pid != before[i] and after[i].agent == "agent-2"


def test_pending_until_capacity_appears_without_moving_running_ones(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, capacity=2, spare_hosts=1, workdir=str(app_dir))
    c.ctl("deploy", str(app_dir / "Procfile"))
    c.ctl("scale", "svc=6")
    wait_for(lambda: len(c.running()) == 4, 15, what="4 of 6 to run")
    rows = {r["id"]: r for r in c.ps()}
    assert sorted(i for i, r in rows.items() if r["state"] == "pending") == ["svc.5", "svc.6"]
    assert all(rows[i]["agent"] is None for i in ("svc.5", "svc.6"))
    assert "pending" in c.ctl("ps").stdout
    assert c.scrape("scheduler")['formation_pending_instances{app="default"}'] == 2
    pids = {i: inst.pid for i, inst in c.running().items()}
    c.start_agent("agent-3")  # a new machine joins
    wait_for(lambda: len(c.running()) == 6, 15, what="pending instances to be placed")
    assert on_agent(c, "agent-3") == {"svc.5", "svc.6"}
    assert {i: c.running()[i].pid for i in pids} == pids
    assert c.scrape("scheduler").get('formation_pending_instances{app="default"}', 0) == 0

    # Every slot is taken: a new type's instance waits until another type scales down.
    c.ctl("scale", "worker=1")
    wait_for(lambda: c.instances()["worker.1"].state == InstanceState.PENDING, 10)
    stops = c.scrape("scheduler")["formation_stops_total"]
    c.ctl("scale", "svc=5")  # svc.6 (the highest) goes; worker.1 takes its slot
    want = {f"svc.{n}" for n in range(1, 6)} | {"worker.1"}
    running = c.wait_running(want, timeout=15)
    assert running["worker.1"].agent == "agent-3"
    assert {i: running[i].pid for i in pids} == pids
    assert c.scrape("scheduler")["formation_stops_total"] == stops + 1

    # A down agent's instances with nowhere to go are pending again (its `lost` rows last
    # only until the same pass re-places them), the others untouched.
    c.kill_agent("agent-3")
    gone = wait_for(lambda: [r for r in c.ps() if r["id"] in ("svc.5", "worker.1")
                             and r["state"] == "pending"], 10, what="pending rows")
    assert len(gone) == 2 and all(r["agent"] is None for r in gone), gone
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
    # The watch on apps/ is back: a count another writer puts into etcd is applied.
    c.etcdctl("put", f"{c.prefix}/apps/default/formation/svc", "7")
    running = c.wait_running({f"svc.{n}" for n in range(1, 8)}, timeout=20)
    assert {i: running[i].pid for i in pids} == pids
    assert {t.type: t.desired for t in c.client.formation("default").types}["svc"] == 7


def test_losing_one_of_three_etcd_members_changes_nothing(hosts_cluster, app_dir):
    c = hosts_cluster(agents=2, etcd_members=3, workdir=str(app_dir))
    deploy(c, app_dir, "svc=3")
    pids = {i: inst.pid for i, inst in c.instances().items()}
    c.stop_etcd(0, signal.SIGKILL)  # the member the scheduler talks to first
    # "fails over to another member at once": the very first write after the loss succeeds,
    # with no retry by the test (generous: a raft election may have to happen first).
    began = time.monotonic()
    first = c.ctl("scale", "svc=5", check=False, timeout=30)
    took = time.monotonic() - began
    assert first.returncode == 0, first.stderr
    assert took < 10, f"the first write after losing a member took {took:.1f}s"
    running = c.wait_running({f"svc.{n}" for n in range(1, 6)}, timeout=20)
    assert {i: running[i].pid for i in pids} == pids
    c.restart_scheduler()  # and a new scheduler recovers from the two members left
    assert {i: c.running()[i].pid for i in pids} == pids


def test_drain_starts_each_replacement_before_stopping_the_old_copy(hosts_cluster, app_dir):
    c = hosts_cluster(agents=3, workdir=str(app_dir))
    ids = set(deploy(c, app_dir, "svc=6", "clock=1"))
    victim = c.instances()["clock.1"].agent  # so the at_most_once move is exercised too
    before = {i: inst.pid for i, inst in c.instances().items()}
    mine = on_agent(c, victim)
    assert {"clock.1"} < mine
    # The truth is sampled from before `ctl drain` is called until the agent is drained.
    with Sampler(c) as sampler:
        wait_for(lambda: sampler.samples > 3, 5)
        out = c.ctl("drain", victim)
        assert "draining" in out.stdout
        assert agent_state(c, victim) in ("draining", "drained")
        assert c.scrape("scheduler")['formation_agents{state="draining"}'] == 1
        wait_for(lambda: agent_state(c, victim) == "drained", 30, what=f"{victim} drained")
        wait_for(lambda: exactly_once(c, ids), 10)
    svcs = sorted(i for i in ids if i.startswith("svc"))
    # never zero copies of a svc instance while it moves (each sampled throughout)...
    assert all(sampler.least[i] >= 1 for i in svcs), sampler.least
    # ...and every one of them moved: new processes elsewhere, the old ones gone
    assert not on_agent(c, victim) and victim not in c.truth()
    after = c.instances()
    for i in mine:
        assert after[i].pid != before[i] and not procs.alive(before[i]), i
    # clock.1 (at_most_once) stopped first, then started: never two, and it runs again.
    assert sampler.most["clock.1"] == 1
    never_twice(c, app_dir)
    assert "drained" in c.ctl("agents").stdout
    c.ctl("undrain", victim)
    assert agent_state(c, victim) == "ready"
    c.ctl("scale", "svc=9", "--wait", "--timeout", "20")
    assert on_agent(c, victim)  # it takes new instances again
    bad = c.ctl("drain", "nosuch", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@needs_netns
def test_a_sigterm_ignoring_at_most_once_instance_is_killed_in_time_with_fence_after(
        hosts_cluster, tmp_path):
    """--fence-after 2.5 with an 8 s ttl: the cut-off agent SIGTERMs its at_most_once instance
    2.5 s after its last word from the scheduler (not 60 % of the ttl, 4.8 s), SIGKILLs it
    (ttl - fence_after) / 2 = 2.75 s later since it ignores SIGTERM (its guardian would only at
    2.5 + 0.75 * 5.5 = 6.6 s), all before the scheduler places it elsewhere (8 s); the flock
    oracle proves no two copies ever ran. (A fence_after at or below the 1 s heartbeat makes
    even connected agents fence over and over: not a setting to test with.)"""
    (tmp_path / "Procfile").write_text(f"clock: {stubborn(tmp_path)}\n")
    (tmp_path / "formation.toml").write_text("[clock]\nat_most_once = true\nstop_timeout = 30\n")
    c = hosts_cluster(agents=2, agent_ttl=8.0, scheduler_args=["--fence-after", "2.5"],
                      workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "clock=2")
    running = c.wait_running({"clock.1", "clock.2"}, timeout=20)
    victim = running["clock.1"].agent
    pid = running["clock.1"].pid
    cut = time.time()
    c.cut(victim)
    terms = wait_for(lambda: [t for what, iid, p, t in events(tmp_path)
                              if what == "term" and p == pid], 10, interval=0.02,
                     what="the SIGTERM of the fence")
    wait_for(lambda: not procs.alive(pid), 10, interval=0.02, what="the SIGKILL of the fence")
    killed = time.time()
    wait_for(lambda: c.instances()["clock.1"].agent != victim, 20, what="clock.1 to move")
    moved = time.time()
    # The last word came at most ~1 s (a heartbeat's answer) before the cut.
    assert 2.5 - 1.2 <= terms[0] - cut <= 2.5 + 1.0, f"SIGTERM {terms[0] - cut:.2f}s after the cut"
    assert 2.75 - 0.1 <= killed - terms[0] <= 2.75 + 1.0, \
        f"SIGKILL {killed - terms[0]:.2f}s after SIGTERM"
    assert killed < moved
    c.heal(victim)
    wait_for(lambda: exactly_once(c, {"clock.1", "clock.2"}) and
             len(c.running()) == 2, 20, what="each clock exactly once")
    # No other SIGTERM: the connected agent never fenced, each clock was started once more.
    assert [(w, i) for w, i, _, _ in events(tmp_path) if w == "term"] == [("term", "clock.1")]
    assert re.search(r"clock\.1 did not stop in time; killing it", c.log(victim))
    never_twice(c, tmp_path)
