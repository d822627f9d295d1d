"""Hostile and careless input against real daemons: it gets a documented status or exit code
and changes nothing."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from tests.cluster.harness import ROOT

GARBAGE = b"\xff\xff\xff\xff"  # field 0x1fffffff... with wire type 7: no protobuf decodes it


@pytest.mark.parametrize("method", ["Control/Scale", "Control/Deploy", "Control/ListInstances",
                                    "Control/GetFormation"])
def test_garbage_bytes_get_invalid_argument(cluster, method):
    with grpc.insecure_channel(cluster.listen) as channel:
        call = channel.unary_unary(f"/formation.v1.{method}")
        with pytest.raises(grpc.RpcError) as e:
            call(GARBAGE, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "not a valid" in e.value.details()
    cluster.ctl("ps")  # and it still answers


def test_garbage_on_the_agent_link_and_agent_api_gets_invalid_argument(cluster):
    with grpc.insecure_channel(cluster.listen) as channel:
        stream = channel.stream_stream("/formation.v1.AgentLink/Connect")
        with pytest.raises(grpc.RpcError) as e:
            list(stream(iter([GARBAGE]), timeout=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    agent_api = cluster._agent_listen["agent-1"]
    with grpc.insecure_channel(agent_api) as channel:
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
         "--listen", cluster._agent_listen["agent-1"], "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert agent.returncode == 1, agent
    assert "cannot listen" in agent.stdout + agent.stderr
    assert [a.name for a in cluster.client.agents()] == ["agent-1", "agent-2"]
