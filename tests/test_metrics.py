"""The daemons' own endpoints: gRPC health on scheduler and agents, /metrics contents and the
scheduler's Prometheus service discovery JSON."""
from __future__ import annotations

import json
import urllib.request

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cluster import wait_for


def test_grpc_health_service_on_scheduler_and_agents(cluster):
    for address in ["", *cluster.agent_names]:  # the scheduler, then each agent's API
        with cluster.channel(address, role="scheduler", name="scheduler") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, address


def test_metrics_and_service_discovery(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("scale", "web=2", "worker=1", "--wait", "--timeout", "20")
    s = wait_for(lambda: (m := cluster.scrape("scheduler")).get(
        'formation_running_instances{app="default",type="web"}') == 2 and m, 10)
    assert s['formation_desired_instances{app="default",type="web"}'] == 2
    assert s['formation_agents{state="ready"}'] == 2
    assert s["formation_placements_total"] >= 3
    assert s["formation_reconcile_duration_seconds_count"] > 0
    assert s["formation_scheduler_start_time_seconds"] > 1.7e9
    assert any(k.startswith("formation_etcd_request_duration_seconds_count") for k in s)
    assert "process_resident_memory_bytes" in s

    web1 = cluster.instances()["web.1"]
    a = cluster.scrape(web1.agent)
    key = 'app="default",generation="0",id="web.1",release="1",type="web"'
    assert a[f"formation_agent_instance_resident_memory_bytes{{{key}}}"] > 1_000_000
    assert f"formation_agent_instance_cpu_seconds_total{{{key}}}" in a
    assert a[f"formation_agent_instance_restarts_total{{{key}}}"] == 0
    assert a['formation_agent_slots{kind="total"}'] == 20
    assert a["formation_agent_connected"] == 1
    assert a['formation_agent_instance_start_seconds_count{phase="healthy"}'] >= 1

    def sd(path: str) -> list:
        url = f"http://{cluster.metrics['scheduler']}{path}"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"] == "application/json"
            return json.loads(r.read())
    agents = sd("/sd/agents")
    assert sorted(g["labels"]["agent"] for g in agents) == ["agent-1", "agent-2"]
    assert {g["targets"][0] for g in agents} == {cluster.metrics["agent-1"],
                                                 cluster.metrics["agent-2"]}
    instances = {g["labels"]["instance"]: g for g in sd("/sd/instances")}
    assert set(instances) == {"web.1", "web.2", "worker.1"}
    assert instances["web.1"]["targets"] == [f"127.0.0.1:{web1.port}"]
    assert instances["web.1"]["labels"] == {"app": "default", "type": "web",
                                            "instance": "web.1", "agent": web1.agent,
                                            "release": "1"}
    # And the example web app serves its own /metrics there.
    with urllib.request.urlopen(f"http://127.0.0.1:{web1.port}/metrics", timeout=5) as r:
        assert b"example_requests_total" in r.read()
