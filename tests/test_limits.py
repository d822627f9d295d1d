"""The control plane at its limits (docs/limits.md): big and many releases, many instances,
many agents, back-to-back calls. Each case once stopped or broke the scheduler."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from common.appdef import ProcessType
from common.appdef_pb import type_to_pb
from common.states import AgentState
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import wait_for
from tests.cluster.harness import ROOT

SLEEP = [type_to_pb(ProcessType("worker", "sleep 100000"))]


@contextlib.contextmanager
def control(c) -> Iterator[pbg.ControlStub]:
    with c.channel() as channel:
        yield pbg.ControlStub(channel)


def test_200_releases_with_a_20kb_env_stop_nothing_and_recover(make_cluster):
    c = make_cluster(agents=1)
    with control(c) as stub:
        env = {f"V{i}": "x" * 1000 for i in range(20)}  # 20 KB
        for _ in range(200):
            stub.Deploy(pb.DeployRequest(app="big", types=SLEEP, env=env), timeout=10)
        # Another app still gets what it asks for, and so does this one.
        stub.Deploy(pb.DeployRequest(app="other", types=SLEEP), timeout=10)
        stub.Scale(pb.ScaleRequest(app="other", counts={"worker": 2}), timeout=10)
        stub.Scale(pb.ScaleRequest(app="big", counts={"worker": 1}), timeout=10)
        c.wait_running({"worker.1", "worker.2"}, app="other")
        c.wait_running({"worker.1"}, app="big")
        # Only the last 50 releases (and any still assigned) are kept, and a restart recovers.
        c.restart_scheduler()
        assert c.client.formation("big").release == 200
        c.ctl("scale", "worker=3", app="other")
        c.wait_running({"worker.1", "worker.2", "worker.3"}, app="other")
        log = c.log("scheduler")
        assert "forgot releases" in log and "Traceback" not in log


def test_hellos_with_huge_fields_are_refused(cluster):
    with cluster.channel(role="agent", name="huge") as channel:
        stub = pbg.AgentLinkStub(channel)
        for _ in range(4):
            hello = pb.Hello(name="huge", capacity=1, address="a" * 1_200_000)
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Connect(iter([pb.AgentMessage(hello=hello)]), timeout=5))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [a.name for a in cluster.client.agents()] == ["agent-1", "agent-2"]
    cluster.restart_scheduler()
    assert [a.name for a in cluster.client.agents()] == ["agent-1", "agent-2"]


def test_deploy_then_scale_then_deploy_back_to_back_through_the_api(cluster):
    with control(cluster) as stub:
        for i in range(100):
            app = f"app{i}"
            assert stub.Deploy(pb.DeployRequest(app=app, types=SLEEP), timeout=10).version == 1
            assert stub.Scale(pb.ScaleRequest(app=app, counts={"worker": 0}),
                              timeout=10).counts == {"worker": 0}
            assert stub.Deploy(pb.DeployRequest(app=app, types=SLEEP, env={"V": "2"}),
                               timeout=10).version == 2


def test_ctl_ps_pages_past_4_mib_and_filters(make_cluster, tmp_path):
    """10 types x 10,000, all pending (no agent): 100,000 rows."""
    (tmp_path / "Procfile").write_text("".join(f"t{i}: sleep 1\n" for i in range(10)))
    c = make_cluster(agents=0, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", *(f"t{i}=10000" for i in range(10)))
    wait_for(lambda: len(c.client.instances("default")) == 100_000, 60,
             what="100,000 pending rows")
    rows = json.loads(c.ctl("ps", "--json").stdout)
    assert len(rows) == 100_000 and {r["state"] for r in rows} == {"pending"}
    assert rows[0]["id"] == "t0.1" and rows[-1]["id"] == "t9.10000"
    text = c.ctl("ps").stdout
    assert text.count("\n") == 100_001
    only = json.loads(c.ctl("ps", "--json", "--type", "t3", "--state", "pending").stdout)
    assert len(only) == 10_000 and {r["type"] for r in only} == {"t3"}
    assert json.loads(c.ctl("ps", "--json", "--state", "running").stdout) == []
    bad = c.ctl("ps", "--state", "sleeping", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_down_agents_are_forgotten_and_can_be_removed(make_cluster):
    c = make_cluster(agents=1, agent_ttl=2.0, scheduler_args=["--agent-forget-after", "3"])
    with c.channel(role="agent", name="ghost-1") as one, \
            c.channel(role="agent", name="ghost-2") as two:
        for name, channel in (("ghost-1", one), ("ghost-2", two)):  # hello, then no heartbeat
            hello = pb.AgentMessage(hello=pb.Hello(name=name, capacity=1))
            next(iter(pbg.AgentLinkStub(channel).Connect(iter([hello]), timeout=5)))  # its list

    def names() -> list[str]:
        return sorted(a.name for a in c.client.agents())
    assert names() == ["agent-1", "ghost-1", "ghost-2"]
    live = c.ctl("agents", "rm", "agent-1", check=False)
    assert live.returncode == 2 and "not down" in live.stderr
    # Down after the 2 s ttl; `rm` forgets one at once, the clock the other after 3 s more.
    wait_for(lambda: all(a.state == AgentState.DOWN for a in c.client.agents()
                         if a.name.startswith("ghost")), 10, what="ghosts down")
    c.ctl("agents", "rm", "ghost-1")
    assert "ghost-1" not in names()
    wait_for(lambda: names() == ["agent-1"], 10, what="ghost-2 forgotten")
    c.restart_scheduler()  # and etcd forgot them too
    assert names() == ["agent-1"]
    assert c.ctl("agents", "rm", "nobody", check=False).returncode == 2


def test_scheduler_flags_are_bounded():
    for flags in (["--agent-ttl", "nan"], ["--agent-ttl", "1"], ["--release-history", "0"],
                  ["--agent-forget-after", "inf"], ["--fence-after", "-1"],
                  ["--fence-after", "1"], ["--leader-ttl", "1"], ["--leader-ttl", "301"],
                  ["--leader-ttl", "2.5"], ["--leader-ttl", "nan"], ["--name", "a b"],
                  ["--name", ""], ["--name", "x" * 254], ["--name", "a\x01"],
                  ["--advertise", "no-port"], ["--advertise", "h:99999"],
                  ["--advertise", "h\u00e9:1"], ["--advertise", "h" * 300 + ":1"]):
        r = subprocess.run([sys.executable, "-m", "scheduler", *flags], cwd=ROOT, timeout=30,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (flags, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (flags, r.stderr)
