"""Metrics and service discovery against a real Prometheus (Debian's `prometheus` package):
deploy/prometheus/prometheus.yml, pointed at a real cluster, finds every agent and every
instance through the scheduler's /sd endpoints, and formation_* series follow `ctl scale`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from ctl.localcluster import Launch, free_port, wait_port
from tests.cluster import wait_for
from tests.cluster.harness import ROOT

DEPLOY = os.path.join(ROOT, "deploy", "prometheus")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
missing = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="no prometheus binary (apt-get install prometheus; CI installs it)")


@missing
def test_promtool_accepts_the_shipped_config_and_rules():
    assert PROMTOOL is not None, "promtool is not installed"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


no_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="no promtool (it comes with Debian's prometheus package; CI installs it)")


@no_promtool
def test_every_alert_fires_when_it_should_and_not_otherwise():
    """deploy/prometheus/rules_test.yml: promtool's unit tests of each rule in rules.yml."""
    assert PROMTOOL is not None, "promtool is not installed"
    result = subprocess.run([PROMTOOL, "test", "rules", "rules_test.yml"], cwd=DEPLOY,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(DEPLOY, "rules.yml")) as f:
        alerts = {line.split(":", 1)[1].strip() for line in f if "- alert:" in line}
    with open(os.path.join(DEPLOY, "rules_test.yml")) as f:
        tested = f.read()
    assert alerts and all(f"alertname: {a}" in tested for a in alerts), alerts


@no_promtool
def test_not_converged_description_says_desired_and_running(tmp_path):
    assert PROMTOOL is not None, "promtool is not installed"
    shutil.copy(os.path.join(DEPLOY, "rules.yml"), tmp_path / "rules.yml")
    (tmp_path / "t.yml").write_text("""rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'formation_desired_instances{app="shop",type="web"}'
        values: '3x10'
      - series: 'formation_running_instances{app="shop",type="web"}'
        values: '2x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: FormationNotConverged
        exp_alerts:
          - exp_labels: {severity: warning, app: shop, type: web}
            exp_annotations:
              summary: "shop/web: desired and running differ for 5 minutes"
              description: "desired 3, running 2"
""")
    result = subprocess.run([PROMTOOL, "test", "rules", "t.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def api(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def value(base: str, query: str) -> dict[str, float]:
    """instant query -> {label 'instance' or 'type' or '': value}"""
    out = {}
    for row in api(base, "/api/v1/query", query=query)["result"]:
        m = row["metric"]
        out[m.get("instance") if m.get("job") == "formation-instances" else
            m.get("type", m.get("agent", ""))] = float(row["value"][1])
    return out


@missing
def test_prometheus_discovers_agents_and_instances_and_tracks_the_formation(make_cluster,
                                                                            tmp_path):
    assert PROMETHEUS is not None and PROMTOOL is not None, "prometheus is not installed"
    c = make_cluster(agents=2)
    sched = c.metrics["scheduler"]
    with open(os.path.join(DEPLOY, "prometheus.yml")) as f:
        config = f.read()
    config = config.replace("formation-scheduler:9100", sched) \
        .replace("scrape_interval: 15s", "scrape_interval: 1s") \
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s") \
        .replace("refresh_interval: 30s", "refresh_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(os.path.join(DEPLOY, "rules.yml"), tmp_path / "rules.yml")
    check = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    # SIM115: the Part returned owns the file and closes it on stop()
    prom = Launch(stdout=lambda name: open(tmp_path / "prometheus.log", "a")).start(  # noqa: SIM115
        "prometheus", [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                       f"--storage.tsdb.path={tmp_path / 'data'}",
                       f"--web.listen-address=127.0.0.1:{port}"])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_port("127.0.0.1", port, 30, prom.proc)
        c.ctl("deploy", "examples/Procfile")
        c.ctl("scale", "web=3", "worker=1", "--wait", "--timeout", "30")

        # Every agent target is up.
        wait_for(lambda: value(base, 'up{job="formation-agents"}') ==
                 {"agent-1": 1.0, "agent-2": 1.0}, 30, interval=0.5, what="agents up")
        # The example web instances are discovered (and scraped: they serve /metrics).
        wait_for(lambda: {k: v for k, v in value(base, 'up{job="formation-instances"}').items()
                          if k.startswith("web")} == {"web.1": 1.0, "web.2": 1.0, "web.3": 1.0},
                 30, interval=0.5, what="web instances discovered and up")
        targets = api(base, "/api/v1/targets")["activeTargets"]
        web1 = next(t for t in targets if t["labels"].get("instance") == "web.1")
        assert web1["labels"]["app"] == "default" and web1["labels"]["type"] == "web"
        assert web1["labels"]["agent"] in ("agent-1", "agent-2")
        assert value(base, "example_requests_total").keys() >= {"web.1", "web.2", "web.3"}
        # formation_* series follow the formation.
        wait_for(lambda: value(base, "formation_desired_instances") == {"web": 3, "worker": 1}
                 and value(base, "formation_running_instances") == {"web": 3, "worker": 1},
                 30, interval=0.5, what="formation series at 3/1")
        assert value(base, 'formation_agents{state="ready"}') == {"": 2.0}
        c.ctl("scale", "web=1", "--wait", "--timeout", "30")
        wait_for(lambda: value(base, "formation_desired_instances")["web"] == 1
                 and value(base, "formation_running_instances")["web"] == 1
                 and value(base, "sum(formation_agent_instances)") == {"": 2.0},
                 30, interval=0.5, what="formation series after scale web=1")
        # Per-instance resource series from the agents.
        rss = value(base, 'formation_agent_instance_resident_memory_bytes{id="web.1"}')
        assert rss and all(v > 1_000_000 for v in rss.values())
    finally:
        prom.stop()
