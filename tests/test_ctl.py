"""ctl against a real cluster: bad input exits 2 with one line and changes nothing; an
unreachable scheduler exits 1 with one line; JSON shapes of docs/ctl.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cluster import Cluster, procs, wait_for
from tests.cluster.harness import EXAMPLES, ROOT
from tests.cluster.oracles import once, second_copies

BAD_SCALES = [["web=-1"], ["web=abc"], ["web=1x"], ["nosuch=1"], ["Web=1"], ["web=100000"],
              ["web=1", "bad_type=1"], ["we.b=1"], ["web"]]


def one_line(stderr: str) -> bool:
    return stderr.count("\n") == 1 and stderr.startswith("ctl: ") and "Traceback" not in stderr


@pytest.fixture(scope="module")
def deployed(etcd_url):
    """One cluster for the bad-input cases, which must leave it as it was."""
    with Cluster(agents=1, etcd=etcd_url) as c:
        c.ctl("deploy", "examples/Procfile")
        c.ctl("scale", "web=1", "worker=1")
        c.wait_running({"web.1", "worker.1"})  # "before" must not change on its own
        yield c


@pytest.mark.parametrize("args", BAD_SCALES, ids=" ".join)
def test_bad_scale_exits_2_and_changes_nothing(deployed, args):
    before = deployed.ctl("formation", "--json").stdout
    result = deployed.ctl("scale", *args, check=False)
    assert result.returncode == 2, result.stderr
    assert one_line(result.stderr), result.stderr
    assert deployed.ctl("formation", "--json").stdout == before


@pytest.mark.parametrize("app", ["Bad", "bad_app", "-x", "a" * 64, "b/../c"])
def test_bad_app_name_exits_2(deployed, app):
    for args in (["scale", "web=1"], ["ps"], ["formation"], ["deploy", "examples/Procfile"]):
        result = deployed.ctl(*args, app=app, check=False)
        assert result.returncode == 2 and one_line(result.stderr), (args, result.stderr)
    assert deployed.client.formation(app="default").release == 1


def test_scale_before_any_deploy_is_refused(cluster):
    result = cluster.ctl("scale", "web=1", check=False)
    assert result.returncode == 2 and "ctl deploy" in result.stderr


def test_bad_procfile_names_its_line_and_changes_nothing(cluster, tmp_path):
    bad = tmp_path / "Procfile"
    bad.write_text("web: python3 web.py\nthis line is wrong\n")
    result = cluster.ctl("deploy", str(bad), check=False)
    assert result.returncode == 2 and one_line(result.stderr)
    assert f"{bad}:2:" in result.stderr
    settings = tmp_path / "formation.toml"
    bad.write_text("web: python3 web.py\n")
    settings.write_text("[web]\nstop_timeout = 1\ncolour = 'blue'\n")
    result = cluster.ctl("deploy", str(bad), check=False)
    assert result.returncode == 2 and "colour" in result.stderr and one_line(result.stderr)
    missing = cluster.ctl("deploy", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and one_line(missing.stderr)
    assert cluster.ctl("formation", "--json").stdout.strip() == "{}"


def test_scheduler_unreachable_is_one_line_and_exit_1():
    env = {**os.environ, "FORMATION_SCHEDULER": "127.0.0.1:9"}
    for args in (["ps"], ["agents"], ["formation"], ["scale", "web=1"],
                 ["deploy", "examples/Procfile"]):
        result = subprocess.run([sys.executable, "-m", "ctl", *args], capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=30)
        assert result.returncode == 1, (args, result.stderr)
        assert one_line(result.stderr) and "127.0.0.1:9" in result.stderr


def test_json_shapes(cluster):
    deployed = json.loads(cluster.ctl("deploy", "examples/Procfile", "--env", "GREETING=hi",
                                      "--json").stdout)
    assert deployed["release"] == 1
    cluster.ctl("scale", "web=2", "--wait", "--timeout", "20")
    rows = json.loads(cluster.ctl("ps", "--json").stdout)
    assert [r["id"] for r in rows] == ["web.1", "web.2"]
    for r in rows:
        assert r["app"] == "default" and r["type"] == "web" and r["state"] == "running"
        assert r["agent"] in ("agent-1", "agent-2") and r["pid"] > 0 and r["port"] > 0
        assert r["restarts"] == 0 and r["release"] == 1
    assert json.loads(cluster.ctl("formation", "--json").stdout) == \
        {"web": {"desired": 2, "running": 2}, "worker": {"desired": 0, "running": 0}}
    agents = json.loads(cluster.ctl("agents", "--json").stdout)
    assert [a["name"] for a in agents] == ["agent-1", "agent-2"]
    for a in agents:
        assert set(a) >= {"name", "address", "state", "capacity", "instances", "last_seen"}
        assert a["state"] == "ready" and a["capacity"] == 20 and a["address"] == "127.0.0.1"
    assert sum(a["instances"] for a in agents) == 2
    # The release's environment reached the instance.
    pid = rows[0]["pid"]
    assert procs.environ(pid)["GREETING"] == "hi"


def test_redeploy_restarts_instances_on_the_new_release(cluster, tmp_path):
    """A new release replaces every instance: each old process is gone, each new one has the
    new env. A type without a health check (worker) is replaced stop-first, so it never ran
    twice at once (the flock oracle of tests/cluster/oracles.py: a copy started while the old
    one still held its lock exits 97 and leaves its id in tmp_path/SECOND); web surges, its
    new copies beside the old ones (tests/test_rolling.py)."""
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"web: python3 {EXAMPLES}/web.py\n"
                        f"worker: {once(tmp_path, 'sleep 100000')}\n")
    cluster.ctl("deploy", str(procfile), "--env", "V=1")
    cluster.ctl("scale", "web=2", "worker=2", "--wait", "--timeout", "20")
    old = {r["id"]: r["pid"] for r in cluster.ps()}
    assert len(old) == 4
    cluster.ctl("deploy", str(procfile), "--env", "V=2")

    def moved():
        rows = cluster.ps()
        return len(rows) == 4 and all(r["release"] == 2 and r["state"] == "running" and
                                      r["pid"] != old[r["id"]] for r in rows) and rows
    rows = wait_for(moved, 20, what="instances on release 2")
    wait_for(lambda: not [i for i, pid in old.items() if procs.alive(pid)], 20,
             what="the old copies gone")
    for r in rows:
        env = procs.environ(r["pid"])
        assert env["V"] == "2" and env["FORMATION_RELEASE"] == "2", (r["id"], env.get("V"))
    assert second_copies(tmp_path) == [], "a new copy started before the old one stopped"
    assert all("exited with code 97" not in cluster.log(a) for a in cluster.agent_names)
