"""The core end to end: real etcd, scheduler, agents and instance processes (checked in /proc)."""
from __future__ import annotations

import os
import signal
from collections import Counter

from tests.cluster import procs, wait_for

WEB = {f"web.{n}" for n in range(1, 11)}


def test_deploy_scale_up_and_down_with_processes_checked_in_proc(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=10", "worker=2")
    running = cluster.wait_running(WEB | {"worker.1", "worker.2"})

    # Each listed pid is a real process running its instance with the contract's environment.
    for iid, inst in running.items():
        env = procs.environ(inst.pid)
        assert env["FORMATION_INSTANCE"] == iid and env["FORMATION_APP"] == "default"
        assert env["FORMATION_RELEASE"] == "1" and env["PORT"] == str(inst.port)
        assert procs.pgid(inst.pid) == inst.pid  # its own process group, no shell in between
    assert len({i.port for i in running.values() if i.agent == "agent-1"}) == \
        sum(1 for i in running.values() if i.agent == "agent-1")

    ps = cluster.ps()
    assert {row["id"] for row in ps} == set(running)
    assert set(ps[0]) >= {"id", "app", "type", "agent", "state", "pid", "port", "restarts",
                          "release"}

    old = {iid: inst.pid for iid, inst in running.items()}
    cluster.ctl("scale", "web=2", "--wait", "--timeout", "20")
    cluster.wait_running({"web.1", "web.2", "worker.1", "worker.2"})
    for iid, pid in old.items():
        if iid in ("web.1", "web.2", "worker.1", "worker.2"):
            assert procs.alive(pid), f"{iid} was restarted by a scale-down"
        else:
            assert not procs.alive(pid), f"{iid} (pid {pid}) still runs after scale-down"
    assert set(cluster.running()) == {"web.1", "web.2", "worker.1", "worker.2"}


def test_instances_spread_evenly_across_agents(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=10", "worker=3", "--wait", "--timeout", "30")
    ps = cluster.ps()
    by_type = {t: Counter(r["agent"] for r in ps if r["type"] == t) for t in ("web", "worker")}
    assert by_type["web"] == {"agent-1": 5, "agent-2": 5}
    assert sorted(by_type["worker"].values()) == [1, 2]
    formation = cluster.ctl("formation", "--json").stdout
    assert '"web": {\n    "desired": 10,\n    "running": 10' in formation


def test_killed_instance_is_replaced_with_a_new_pid(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=2", "worker=0")
    first = cluster.wait_running({"web.1", "web.2"})["web.1"]
    os.kill(first.pid, signal.SIGKILL)

    def replaced():
        inst = cluster.running().get("web.1")
        return inst if inst is not None and inst.pid != first.pid else None
    again = wait_for(replaced, 5, what="web.1 to come back with a new pid")
    assert again.restarts == first.restarts + 1 and again.agent == first.agent
    assert not procs.alive(first.pid)


def test_scheduler_restart_keeps_every_instance_running(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=4", "worker=2")
    before = {i: inst.pid for i, inst in cluster.wait_running(
        {"web.1", "web.2", "web.3", "web.4", "worker.1", "worker.2"}).items()}

    cluster.stop_scheduler(signal.SIGKILL)
    down = cluster.ctl("ps", check=False)
    assert down.returncode == 1 and down.stderr.count("\n") == 1
    assert "Traceback" not in down.stderr
    cluster.start_scheduler()
    wait_for(lambda: sum(a.connected for a in cluster.client.agents()) == 2, 15,
             what="agents to reconnect")
    after = {i: inst.pid for i, inst in cluster.wait_running(set(before)).items()}
    assert after == before
    assert all(procs.alive(pid) for pid in before.values())
    assert all(r["restarts"] == 0 for r in cluster.ps())
    # And it still takes orders.
    cluster.ctl("scale", "web=5", "--wait", "--timeout", "20")
    assert cluster.running()["web.1"].pid == before["web.1"]


def test_agent_sigterm_stops_its_children_and_exits_zero(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=4", "worker=2")
    running = cluster.wait_running({"web.1", "web.2", "web.3", "web.4", "worker.1", "worker.2"})
    mine = {iid: inst.pid for iid, inst in running.items() if inst.agent == "agent-1"}
    assert mine
    code = cluster.parts.pop("agent-1").stop(signal.SIGTERM, timeout=20)
    assert code == 0
    assert not [p for p in mine.values() if procs.alive(p)]
    # Each was stopped gracefully (SIGTERM reached it), and its last words were logged.
    log = cluster.log("agent-1")
    for iid in mine:
        assert f"{iid} | {iid} stopped" in log, iid


def test_agent_sigkill_leaves_no_instance_or_grandchild(make_cluster, tmp_path):
    # Each instance starts a grandchild in its own process group, the hard case.
    (tmp_path / "Procfile").write_text(
        "tree: sh -c 'sleep 100000 & sleep 100000 & wait'\nsolo: sleep 100000\n")
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "tree=4", "solo=2")
    c.wait_running({"tree.1", "tree.2", "tree.3", "tree.4", "solo.1", "solo.2"})
    agent_pid = c.parts["agent-1"].pid
    mine = {inst.pid for inst in c.running().values() if inst.agent == "agent-1"}
    group_procs = {p for pid in mine for p in procs.group_members(pid)}
    assert len(group_procs) > len(mine)  # the grandchildren are there
    c.parts.pop("agent-1").stop(signal.SIGKILL)
    wait_for(lambda: not [p for p in group_procs if procs.alive(p)], 5,
             what="every process of the killed agent's instances to be gone")
    assert not procs.alive(agent_pid)
    # The other agent's instances are untouched.
    others = [inst.pid for inst in c.running().values() if inst.agent == "agent-2"]
    assert others and all(procs.alive(p) for p in others)
