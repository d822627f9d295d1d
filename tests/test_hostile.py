"""Hostile and careless input against real daemons: it gets a documented status or exit code
and changes nothing."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from common.states import InstanceState
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import procs, wait_for
from tests.cluster.harness import ROOT

GARBAGE = b"\xff\xff\xff\xff"  # field 0x1fffffff... with wire type 7: no protobuf decodes it


@pytest.mark.parametrize("method", ["Control/Scale", "Control/Deploy", "Control/ListInstances",
                                    "Control/GetFormation"])
def test_garbage_bytes_get_invalid_argument(cluster, method):
    with cluster.channel() as channel:
        call = channel.unary_unary(f"/formation.v1.{method}")
        with pytest.raises(grpc.RpcError) as e:
            call(GARBAGE, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "not a valid" in e.value.details()
    cluster.ctl("ps")  # and it still answers


def test_garbage_on_the_agent_link_and_agent_api_gets_invalid_argument(cluster):
    with cluster.channel(role="agent", name="agent-9") as channel:
        stream = channel.stream_stream("/formation.v1.AgentLink/Connect")
        with pytest.raises(grpc.RpcError) as e:
            list(stream(iter([GARBAGE]), timeout=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    with cluster.channel("agent-1", role="scheduler", name="scheduler") as channel:
        logs = channel.unary_stream("/formation.v1.AgentApi/Logs")
        with pytest.raises(grpc.RpcError) as e:
            list(logs(GARBAGE, timeout=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value


def test_a_second_daemon_on_a_taken_port_fails_to_start(cluster, tmp_path):
    second = subprocess.run(
        [sys.executable, "-m", "scheduler", "--etcd", cluster.etcd_url, "--listen",
         cluster.listen, "--prefix", "/formation-second"], cwd=ROOT, capture_output=True,
        text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert second.returncode == 1, second
    assert f"cannot listen on {cluster.listen}" in second.stdout, second.stdout
    agent = subprocess.run(
        [sys.executable, "-m", "agent", "--name", "intruder", "--scheduler", cluster.listen,
         "--listen", cluster.agent_api("agent-1"), "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert agent.returncode == 1, agent
    assert "cannot listen" in agent.stdout + agent.stderr
    assert [a.name for a in cluster.client.agents()] == ["agent-1", "agent-2"]


def _link(cluster, *messages: pb.AgentMessage) -> list[pb.SchedulerMessage]:
    """Play an agent (with a certificate of the name it says hello as): send messages on one
    AgentLink stream, then hang up; return replies."""
    with cluster.channel(role="agent", name=messages[0].hello.name) as channel:
        stream = pbg.AgentLinkStub(channel).Connect(iter(messages), timeout=5)
        replies = []
        try:
            for reply in stream:
                replies.append(reply)
                if reply.WhichOneof("kind") == "ack":
                    break  # the heartbeat after the statuses was read: they were too
        finally:
            stream.cancel()
        return replies


def _status(app: str, iid: str, state=InstanceState.RUNNING) -> pb.InstanceStatus:
    return pb.InstanceStatus(app=app, id=iid, release=1, state=state, pid=4242, port=5000)


def test_bogus_reports_are_ignored_and_break_nothing(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=1", "worker=1", "--wait", "--timeout", "20")
    # A hello that lists an invalid id is refused as a whole.
    with pytest.raises(grpc.RpcError) as e:
        _link(cluster, pb.AgentMessage(hello=pb.Hello(
            name="liar", capacity=1, instances=[_status("default", "zzz")])))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An agent that reports 20,000 instances it was never given, and an invalid one.
    bogus = [_status("default", f"web.{n}") for n in range(2, 20_002)]
    bogus.append(_status("default", "zzz"))
    _link(cluster, pb.AgentMessage(hello=pb.Hello(name="liar", capacity=1)),
          pb.AgentMessage(statuses=pb.StatusBatch(items=bogus)),
          pb.AgentMessage(heartbeat=pb.Heartbeat()))
    ps = cluster.ps()
    assert sorted(r["id"] for r in ps) == ["web.1", "worker.1"], ps
    text = cluster.ctl("ps").stdout
    assert "zzz" not in text and "web.2" not in text
    assert cluster.client.formation("default").types[0].running == 1


def test_a_list_far_over_4_mib_reaches_the_agent(make_cluster, tmp_path):
    """45 instances of an app whose env is 100 KB: the env travels once, not 45 times."""
    (tmp_path / "Procfile").write_text("worker: sleep 100000\n")
    (tmp_path / "big.env").write_text(f"BIG={'x' * 100_000}\n")
    c = make_cluster(agents=1, capacity=60, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"), "--env-file", str(tmp_path / "big.env"))
    c.ctl("scale", "worker=45")
    running = c.wait_running({f"worker.{n}" for n in range(1, 46)}, timeout=60)
    assert len(procs.environ(running["worker.45"].pid)["BIG"]) == 100_000
    c.ctl("deploy", str(tmp_path / "Procfile"), "--env-file", str(tmp_path / "big.env"))
    # A second release of it: two envs in one list while instances move over.
    wait_for(lambda: len(r := c.running()) == 45 and all(i.release == 2 for i in r.values()),
             60, what="all 45 on release 2")
