"""The agent with real processes: a leader that dies while its group lives on, and a port range
with no free port. Each starts a real cluster (etcd, scheduler, agent) and checks /proc."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from agent.launcher import OsLauncher
from common.states import InstanceState
from ctl.localcluster import free_port
from tests.cluster import procs, wait_for

# The parentheses make it a compound command (agent/launcher.py shell_argv): /bin/sh stays as
# the group leader and python, which holds the port and the output pipe, is its child.
WRAPPED_SERVER = (
    "web: python3 -c \"import http.server,os; http.server.HTTPServer(('127.0.0.1', "
    "int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()\"\n")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.getsockname() != s.getpeername()  # a self-connect is no server
    except OSError:
        return False


async def test_the_launcher_sees_a_leader_exit_while_a_grandchild_holds_its_output():
    launcher = OsLauncher()  # no guardian: this test kills its own group
    child = await launcher.spawn(["/bin/sh", "-c", "sleep 100000; true"], dict(os.environ), "/")
    try:
        deadline = time.monotonic() + 5
        while not (others := [p for p in procs.group_members(child.pid) if p != child.pid]):
            assert time.monotonic() < deadline, "sleep never started"
            await asyncio.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL
        assert all(procs.alive(p) for p in others)  # and they still hold the pipe
    finally:
        launcher.kill_group(child.pid, signal.SIGKILL)
        child.close()


def test_a_dead_leader_is_noticed_its_group_killed_and_the_instance_restarted(
        make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text(WRAPPED_SERVER)
    c = make_cluster(agents=1, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=1")
    first = c.wait_running({"web.1"})["web.1"]
    assert first.restarts == 0 and listening(first.port)
    grandchildren = [p for p in procs.group_members(first.pid) if p != first.pid]
    assert grandchildren, "python should run as the shell's child"

    os.kill(first.pid, signal.SIGKILL)

    def replaced():
        inst = c.instances()["web.1"]
        return inst if (inst.state == InstanceState.RUNNING and inst.pid != first.pid
                        and procs.alive(inst.pid)) else None
    again = wait_for(replaced, 15, what="web.1 running again with a new pid")
    assert again.restarts == 1
    assert not procs.alive(first.pid)
    wait_for(lambda: not [p for p in grandchildren if procs.alive(p)], 5,
             what="the dead leader's grandchild to be killed")
    assert wait_for(lambda: listening(again.port), 10, what="the new copy's port")


def test_an_instance_without_a_free_port_says_why_and_starts_once_one_frees(
        make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text("first: sleep 100000\nsecond: sleep 100000\n")
    # An agent with a one-port range; agents=0 + a spare host so it starts with our range.
    c = make_cluster(agents=0, spare_hosts=1, workdir=str(tmp_path))
    port = free_port()
    c.start_agent("agent-1", port_range=f"{port}-{port}")
    wait_for(lambda: [a for a in c.client.agents() if a.connected], 20, what="agent-1")
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "first=1")
    assert c.wait_running({"first.1"})["first.1"].port == port
    c.ctl("scale", "second=1")
    def says_no_port():
        inst = c.instances().get("second.1")
        return inst if inst and f"no free port in {port}-{port}" in inst.reason else None
    stuck = wait_for(says_no_port, 15, what="second.1 to say it has no port")
    assert stuck.state == InstanceState.CRASHED
    row = next(r for r in c.ps() if r["id"] == "second.1")
    assert f"no free port in {port}-{port}" in row["reason"]

    c.ctl("scale", "first=0")
    again = c.wait_running({"second.1"}, timeout=40)["second.1"]
    assert again.port == port
