"""The release phase on a real cluster (docs/releases.md): the Procfile's `release:` runs once,
on one agent, with the release's env, before anything of the release runs; a failing or
overdue one is never rolled out; a newer release stops one that runs; a rollback runs it
again only if asked."""
from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.cluster import Cluster, wait_for

WEB = "web: python3 -m http.server $PORT\n"
SETTINGS = """\
[web.deploy]
min_healthy_time = 0
"""



def web_pids(c) -> set[int]:
    """The web instances' pids (a release phase's run, killed at its timeout, may still be
    listed a moment, failed, with no pid)."""
    return {i.pid for i in c.instances().values() if i.type == "web"}

def releases(c: Cluster, app: str = "default") -> list[dict]:
    return json.loads(c.ctl("releases", "--json", app=app).stdout)


def events(c: Cluster) -> list[str]:
    return [e["text"] for e in json.loads(c.ctl("events", "--json", "--tail", "1000").stdout)]


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def deploy(c: Cluster, tmp_path: Path, release: str, *extra: str, check: bool = True,
           app: str = "default"):
    (tmp_path / "Procfile").write_text(WEB + f"release: {release}\n")
    return c.ctl("deploy", str(tmp_path / "Procfile"), *extra, check=check, app=app)


def test_release_phase_runs_once_before_the_rollout_and_a_failed_one_rolls_nothing(
        make_cluster, tmp_path):
    ran = tmp_path / "runs"
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    # Each run leaves one word: the release it ran for and the env it saw.
    migrate = f"sh -c 'echo v$FORMATION_RELEASE-$DB >> {ran}; echo migrated $DB'"
    deploy(c, tmp_path, migrate, "--env", "DB=one", "--wait", "--timeout", "60")
    assert runs(ran) == ["v1-one"]  # exactly once, with the release's env, before --wait ends
    assert {i.release for i in c.instances().values()} == {1}
    assert releases(c)[0]["status"] == "current"
    said = events(c)
    assert sum("release phase: release.1 runs on" in e for e in said) == 1, said
    assert any("v1 release phase succeeded" in e for e in said), said
    where = next(e.rsplit(" ", 1)[1] for e in said if "release.1 runs on" in e)
    wait_for(lambda: c.scrape(where).get('formation_agent_log_buffers{kind="release_phase"}')
             == 1, 10, what="its output kept after it ended")
    logs = c.ctl("logs", "release").stdout
    assert "release.1 | migrated one" in logs, logs
    wait_for(lambda: any("release.1 | migrated one" in e for e in events(c)), 10,
             what="its output in the events")
    assert "release" not in json.loads(c.ctl("formation", "--json").stdout)  # not a type
    c.ctl("scale", "web=2", "--wait", "--timeout", "30")
    pids = web_pids(c)

    # A failing release phase: nothing of v2 ever runs, v1 stays current, counts too.
    result = deploy(c, tmp_path, "sh -c 'echo no database; exit 1'", "--wait", "--timeout",
                    "60", check=False)
    assert result.returncode == 1, result
    assert "v2 failed: release phase: exited 1" in result.stderr, result.stderr
    assert "nothing was rolled out" in result.stderr, result.stderr
    top = releases(c)[:2]
    assert [(r["version"], r["status"]) for r in top] == [(2, "failed"), (1, "current")], top
    assert web_pids(c) == pids
    assert {i.release for i in c.instances().values()} == {1}
    refused = c.ctl("rollback", "v2", check=False)  # its code never had its migration
    assert refused.returncode == 2, refused
    assert "release phase of v2 never passed (exited 1)" in refused.stderr, refused.stderr
    # The same for one that outlives its [release] timeout.
    (tmp_path / "formation.toml").write_text(SETTINGS + "[release]\ntimeout = 1\n")
    result = deploy(c, tmp_path, "sleep 60", "--wait", "--timeout", "60", check=False)
    assert result.returncode == 1 and "timed out after 1" in result.stderr, result.stderr
    # its run is gone (it may be listed a moment, failed, after `--wait` has returned)
    wait_for(lambda: not [i for i in c.ps() if i["type"] == "release"], 10, what="its run gone")
    assert web_pids(c) == pids
    (tmp_path / "formation.toml").write_text(SETTINGS)

    # A config change runs it again (it may use the var); a rollback does not, unless asked.
    c.ctl("config", "set", "DB=two", "--wait", "--timeout", "60")  # v4, from v1
    assert runs(ran) == ["v1-one", "v4-two"]
    c.ctl("rollback", "v1", "--wait", "--timeout", "60")  # v5
    assert runs(ran) == ["v1-one", "v4-two"]
    assert {i.release for i in c.instances().values()} == {5}
    c.ctl("rollback", "v4", "--run-release", "--wait", "--timeout", "60")  # v6
    assert runs(ran) == ["v1-one", "v4-two", "v6-two"]
    assert json.loads(c.ctl("formation", "--json").stdout)["web"]["desired"] == 2

    # A newer release stops a release phase that runs, then runs its own: never two at once.
    said = deploy(c, tmp_path, f"sh -c 'echo started >> {ran}; exec sleep 60'", "--json")  # v7
    assert json.loads(said.stdout)["release_phase"] is True
    wait_for(lambda: releases(c)[0].get("reason") == "release phase running", 30,
             what="v7's release phase running")
    assert runs(ran)[-1:] == ["started"]
    refused = c.ctl("restart", "release.7", check=False)  # it runs once: never restarted
    assert refused.returncode == 2 and "runs once" in refused.stderr, refused
    deploy(c, tmp_path, migrate, "--wait", "--timeout", "60")  # v8
    assert runs(ran)[-2:] == ["started", "v8-two"]
    assert [(r["version"], r["status"]) for r in releases(c)[:2]] == [(8, "current"),
                                                                       (7, "superseded")]
    assert not [i for i in c.ps() if i["type"] == "release"]
    assert {i.release for i in c.instances().values()} == {8}


def test_a_release_phase_is_never_run_twice_whatever_stops_it(make_cluster, tmp_path):
    ran = tmp_path / "runs"
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    slow = f"sh -c 'echo v$FORMATION_RELEASE >> {ran}; exec sleep 2'"

    # No agent may take it (both draining): it waits, and says why; then it runs.
    for agent in ("agent-1", "agent-2"):
        c.ctl("drain", agent)
    deploy(c, tmp_path, slow)  # v1
    wait_for(lambda: releases(c)[0].get("reason", "").startswith(
        "release phase waiting for a ready agent with a free slot"), 10, what="it waits")
    c.ctl("undrain", "agent-2")
    wait_for(lambda: releases(c)[0]["status"] == "current", 30, what="v1 rolled out")
    assert runs(ran) == ["v1"]
    c.ctl("undrain", "agent-1")

    # A deploy whose release phase fails runs nothing of it; on an app's first deploy,
    # nothing at all, until a good one.
    result = deploy(c, tmp_path, "false", "--wait", "--timeout", "30", check=False, app="new")
    assert result.returncode == 1 and "nothing was rolled out" in result.stderr, result
    assert c.ps(app="new") == [] and releases(c, app="new")[0]["status"] == "failed"
    assert "v1's release phase failed" in c.ctl("restart", check=False, app="new").stderr

    # The scheduler killed while it runs: the run goes on, and counts once.
    deploy(c, tmp_path, slow)  # v2
    running = lambda: releases(c)[0].get("reason") == "release phase running"  # noqa: E731
    wait_for(running, 30, what="v2's release phase running")
    c.restart_scheduler(signal.SIGKILL)
    wait_for(lambda: releases(c)[0]["status"] == "current", 30, what="v2 rolled out")
    assert runs(ran) == ["v1", "v2"]
    assert {i.release for i in c.instances().values()} == {2}

    # Its agent killed while it runs: the release fails; the run is not started again.
    deploy(c, tmp_path, f"sh -c 'echo v$FORMATION_RELEASE >> {ran}; exec sleep 60'")  # v3
    wait_for(running, 30, what="v3's release phase running")
    where = next(i["agent"] for i in c.ps() if i["id"] == "release.3")
    c.kill_agent(where)
    c.start_agent(where)
    wait_for(lambda: releases(c)[0]["status"] == "failed", 30, what="v3 failed")
    assert "release phase: " in releases(c)[0]["reason"], releases(c)[0]
    assert [(r["version"], r["status"]) for r in releases(c)[:2]] == [(3, "failed"),
                                                                       (2, "current")]
    assert runs(ran) == ["v1", "v2", "v3"]
    assert not [i for i in c.ps() if i["type"] == "release"]
    print("v3:", releases(c)[0]["reason"])
