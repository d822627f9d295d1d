"""Metrics and service discovery against a real Prometheus (Debian's `prometheus` package):
deploy/prometheus/prometheus.yml, pointed at a real cluster, finds every agent and every
instance through the scheduler's /sd endpoints, and formation_* series follow `ctl scale`;
every query of the Grafana dashboard (deploy/grafana/formation.json) gives series there, and
every alert rule evaluates without error."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from typing import Any

import pytest

from ctl.localcluster import Launch, free_port, wait_port
from tests.cluster import wait_for
from tests.cluster.harness import ROOT

DEPLOY = os.path.join(ROOT, "deploy", "prometheus")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "formation.json")
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


def api(base: str, path: str, **params: str) -> Any:
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
    c = make_cluster(agents=2, capacity=3)  # 6 slots: worker=6 beside web=1 leaves one pending
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

        # The series some panels wait for: a restart (web.1 killed, its agent starts it again,
        # which observes the start-latency histogram too) and a pending instance.
        os.kill(c.instances()["web.1"].pid, signal.SIGKILL)
        wait_for(lambda: value(base, 'sum(formation_agent_instance_restarts_total{id="web.1"})')
                 .get("", 0) >= 1, 30, interval=0.5, what="web.1's restart scraped")
        c.ctl("scale", "worker=6")
        wait_for(lambda: value(base, "formation_pending_instances") == {"": 1.0}, 30,
                 interval=0.5, what="one worker pending")
        check_dashboard_queries(base)
        # The pending panel's `or ... * 0` (0 rather than no data) does not hide a real count.
        pending = next(e for title, _, e in queries(load_dashboard())
                       if title == "Pending instances" and e.startswith("sum by (app)"))
        assert {r["metric"]["app"]: float(r["value"][1]) for r in api(
            base, "/api/v1/query", query=pending)["result"]} == {"default": 1.0}
        # Every rule of rules.yml evaluates without error on these real series, and a cluster
        # with a leader is not FormationSchedulerNoLeader (its `or vector(0)` aside).
        wait_for(lambda: all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                             for g in api(base, "/api/v1/rules")["groups"] for r in g["rules"]),
                 30, interval=0.5, what="every rule evaluated, health ok")
        rules = {r["name"]: r for g in api(base, "/api/v1/rules")["groups"] for r in g["rules"]}
        assert api(base, "/api/v1/query", query=rules["FormationSchedulerNoLeader"]["query"]
                   )["result"] == []
    finally:
        prom.stop()


# ---- the Grafana dashboard ------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# What Grafana puts in a query for each variable: a multi-value variable as a regex alternation
# (its values here: the test's app and types), the intervals as for the few minutes this test's
# Prometheus has scraped (long enough to hold the events the test causes).
GRAFANA_VALUES = {"app": "(default)", "type": "(web|worker)", "__rate_interval": "2m",
                  "__interval": "15s", "__range": "10m"}


def substitute(expr: str, values: dict[str, str] = GRAFANA_VALUES) -> str:
    """expr with Grafana's variables ($name, ${name}, ${name:format}, [[name]]) replaced;
    KeyError for a variable not in values."""
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]",
                  lambda m: values[m.group(1) or m.group(2) or m.group(3)], expr)


def load_dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, and those inside collapsed rows."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr with variables substituted) of every panel target."""
    return [(p["title"], t["refId"], substitute(t["expr"]))
            for p in all_panels(dashboard) if p["type"] != "row" for t in p["targets"]]


def test_substitute_replaces_grafana_variables():
    assert substitute('rate(x{app=~"$app",type=~"${type}"}[$__rate_interval])') == \
        'rate(x{app=~"(default)",type=~"(web|worker)"}[2m])'
    assert substitute("increase(x[$__range]) + [[app]] ${app:regex}") == \
        "increase(x[10m]) + (default) (default)"
    with pytest.raises(KeyError):
        substitute("x{id=~\"$unknown\"}")


def test_dashboard_is_importable_and_its_queries_name_documented_metrics():
    d = load_dashboard()
    assert d["uid"] == "formation" and d["id"] is None and d["title"]
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["time"]["from"].startswith("now-") and d["refresh"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in d["__inputs"]] == \
        [("DS_PROMETHEUS", "datasource", "prometheus")]
    required = {(r["type"], r["id"]) for r in d["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required

    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"], p["title"]))
        if p["type"] == "row":
            assert not p.get("targets"), p["title"]
            continue
        assert ("panel", p["type"]) in required, p["type"]
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(refs), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t.get("datasource", DATASOURCE) == DATASOURCE, \
                (p["title"], t["refId"])
    for i, a in enumerate(boxes):  # no two panels overlap
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a[4], b[4])

    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["app"]["query"]["query"] == "label_values(formation_desired_instances, app)"
    for v in variables.values():
        assert v["datasource"] == DATASOURCE, v["name"]
        assert "$" not in substitute(v["query"]["query"]), v["name"]
    exprs = queries(d)  # substitute() raises KeyError on an unknown variable
    assert all("$" not in e for _, _, e in exprs)

    # Every formation_* metric that a panel or an alert names is one docs/metrics.md lists.
    with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
        documented = set(re.findall(r"`(formation_\w+)`", f.read()))
    with open(os.path.join(DEPLOY, "rules.yml")) as f:
        rules = f.read()
    named = set(re.findall(r"\bformation_\w+", " ".join(e for _, _, e in exprs) + " " + " ".join(
        line for line in rules.splitlines() if line.strip().startswith("expr:"))))
    undocumented = {n for n in named
                    if re.sub(r"_(bucket|sum|count)$", "", n) not in documented}
    assert named and not undocumented, undocumented


@no_promtool
def test_every_dashboard_query_parses(tmp_path):
    """promtool has no PromQL command; `check rules` parses each query as a recording rule's."""
    assert PROMTOOL is not None, "promtool is not installed"
    d = load_dashboard()
    exprs = [e for _, _, e in queries(d)]
    # A variable's label_values(SELECTOR, LABEL): its selector is a query too.
    exprs += [substitute(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["query"]["query"]))
              for v in d["templating"]["list"]]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "dashboard.yml").write_text(json.dumps({"groups": [
        {"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", "dashboard.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def check_dashboard_queries(base: str) -> None:
    """Each variable of the dashboard lists values, and each panel query gives at least one
    series with a number (not NaN) on the real Prometheus at base."""
    d = load_dashboard()
    for v in d["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"]["query"])
        assert match, v["query"]["query"]
        found = api(base, f"/api/v1/label/{match.group(2)}/values",
                    **{"match[]": substitute(match.group(1))})
        assert found, v["name"]

    def blank() -> list[str]:
        out = []
        for title, ref, expr in queries(d):
            rows = api(base, "/api/v1/query", query=expr)["result"]
            if not any(math.isfinite(float(r["value"][1])) for r in rows):
                out.append(f"{title} {ref}: {expr} -> {rows}")
        return out

    def every_query_answers() -> bool:
        left = blank()
        if left:  # wait_for's timeout says which, from the last try
            raise AssertionError("\n".join(left))
        return True

    wait_for(every_query_answers, 30, interval=0.5, what="every dashboard query to give series")

