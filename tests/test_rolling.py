"""Rolling deploys on a real cluster, watched as a load balancer would (tests/cluster/serving.py:
every copy probed every 20 ms): a deploy, a config change and a rollback of web=10 never let
fewer than 10 copies serve; a release that cannot serve is reverted by itself within 10 s;
counts never change."""
from __future__ import annotations

import json
import signal
import time

from tests.cluster import Cluster, wait_for
from tests.cluster.oracles import Sampler, once, second_copies
from tests.cluster.serving import Serving
from tests.test_serving import SLOW_WEB

SETTINGS = """\
[web.health]
type = "http"
path = "/healthz"
interval = 0.2
grace = 3

[web.deploy]
min_healthy_time = 0.5
"""


def releases(c: Cluster) -> list[dict]:
    return json.loads(c.ctl("releases", "--json").stdout)


def counts(c: Cluster) -> dict[str, int]:
    return {t: v["desired"] for t, v in json.loads(c.ctl("formation", "--json").stdout).items()}


def web10(make_cluster, tmp_path, procfile: str = "web: python3 slowweb.py\n") -> Cluster:
    (tmp_path / "slowweb.py").write_text(SLOW_WEB)
    (tmp_path / "Procfile").write_text(procfile)
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=10", "--wait", "--timeout", "60")
    wait_for(lambda: releases(c)[0]["status"] == "current", 30, what="v1 rolled out")
    return c


def rolled(c: Cluster, what: list[str], version: int) -> float:
    """Run `ctl WHAT --wait` and check every web runs `version` after; its seconds."""
    started = time.monotonic()
    c.ctl(*what, "--wait", "--timeout", "120")
    took = time.monotonic() - started
    ps = c.instances()
    assert {i.release for i in ps.values()} == {version}, ps
    assert len(ps) == 10
    return took


def test_deploy_config_rollback_and_revert_never_drop_a_serving_copy(make_cluster, tmp_path):
    c = web10(make_cluster, tmp_path)
    pids = {i.pid for i in c.instances().values()}
    with Serving(c, floor=10) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 10, 10,
                 what="every copy serving before the deploy")
        took = [rolled(c, ["deploy", str(tmp_path / "Procfile")], 2),
                rolled(c, ["config", "set", "COLOUR=blue"], 3),
                rolled(c, ["rollback", "v1"], 4)]
    assert serving.drops == [], f"fewer than 10 serving at (s, n): {serving.drops[:20]}"
    assert serving.samples > 100
    assert not pids & {i.pid for i in c.instances().values()}  # every copy was replaced
    # The surge is 25 % of 10, rounded up: at most 13 copies at once, and it was used.
    assert 10 < serving.most <= 13, serving.most
    print(f"rollouts took {', '.join(f'{t:.1f}' for t in took)} s; most copies "
          f"serving at once: {serving.most}")
    assert [(r["version"], r["status"]) for r in releases(c)] == [
        (4, "current"), (3, "superseded"), (2, "superseded"), (1, "superseded")]
    assert counts(c) == {"web": 10}

    # A release that cannot boot is reverted by itself within 10 s (same cluster: v5).
    good = (tmp_path / "Procfile").read_text()
    (tmp_path / "Procfile").write_text("web: sh -c 'echo broken; exit 3'\n")
    with Serving(c, floor=10) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 10, 10)
        started = time.monotonic()
        result = c.ctl("deploy", str(tmp_path / "Procfile"), "--wait", "--timeout", "60",
                       check=False)
        answered = time.monotonic() - started
        assert result.returncode == 1, result
        assert "v5 rollout failed" in result.stderr and "reverted to v4" in result.stderr, \
            result.stderr
        assert answered < 10, answered
        wait_for(lambda: {i.release for i in c.instances().values()} == {4}
                 and all(i["state"] == "running" for i in c.ps()), 20,
                 what="every web back on v4, running")
    assert serving.drops == [], serving.drops[:20]
    top = releases(c)[:2]
    assert [(r["version"], r["status"]) for r in top] == [(5, "reverted"), (4, "current")]
    assert "crash-loop breaker" in top[0]["reason"]
    assert counts(c) == {"web": 10}
    print(f"reverted, deploy --wait answered after {answered:.1f} s")
    (tmp_path / "Procfile").write_text(good)


def test_at_most_once_types_never_run_two_copies_during_a_rollout(make_cluster, tmp_path):
    lockdir = tmp_path / "locks"
    lockdir.mkdir()
    (tmp_path / "Procfile").write_text(f"clock: {once(lockdir, 'sleep 100000')}\n")
    # each copy proven for 0.2 s, not the default 2 s: what is checked is that none overlap
    (tmp_path / "formation.toml").write_text("[clock]\nat_most_once = true\n"
                                             "[clock.deploy]\nmin_healthy_time = 0.2\n")
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "clock=4", "--wait", "--timeout", "30")
    with Sampler(c) as sampler:
        c.ctl("config", "set", "X=1", "--wait", "--timeout", "60")
        c.ctl("rollback", "--wait", "--timeout", "60")
    assert second_copies(lockdir) == []
    assert max(sampler.most.values()) == 1, sampler.most
    assert {i.release for i in c.instances().values()} == {3}
    assert counts(c) == {"clock": 4}


def test_restart_and_a_scheduler_killed_mid_rollout_never_drop_a_copy(make_cluster, tmp_path):
    c = web10(make_cluster, tmp_path)
    before = {i.id: i.pid for i in c.instances().values()}
    with Serving(c, floor=10) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 10, 10)
        c.ctl("restart", "web", "--wait", "--timeout", "120")
    assert serving.drops == [], serving.drops[:20]
    after = {i.id: i.pid for i in c.instances().values()}
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    assert {i.release for i in c.instances().values()} == {1}  # same release, same ids
    c.ctl("restart", "web.3", "--wait", "--timeout", "60")
    again = {i.id: i.pid for i in c.instances().values()}
    assert [i for i in again if again[i] != after[i]] == ["web.3"]
    kinds = [e["kind"] for e in json.loads(c.ctl("events", "--json").stdout)]
    assert kinds.count("restart") == 2
    assert counts(c) == {"web": 10}
    bad = c.ctl("restart", "nope", check=False)
    assert bad.returncode == 2 and "neither a process type" in bad.stderr, bad


    # A scheduler killed mid-rollout finishes it after its restart (same cluster: v2, each
    # new copy proven for 1.5 s, so the kill lands mid-way).
    (tmp_path / "formation.toml").write_text(SETTINGS.replace("min_healthy_time = 0.5",
                                                              "min_healthy_time = 1.5"))
    with Serving(c, floor=10) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 10, 10)
        c.ctl("deploy", str(tmp_path / "Procfile"))
        wait_for(lambda: 2 <= sum(i.release == 2 for i in c.instances().values()) < 8, 30,
                 what="the rollout under way")
        c.restart_scheduler(signal.SIGKILL)
        wait_for(lambda: releases(c)[0]["status"] == "current", 60,
                 what="v2 rolled out after the restart")
        ps = c.instances()
    assert serving.drops == [], serving.drops[:20]
    assert {i.release for i in ps.values()} == {2} and len(ps) == 10
    assert c.copies() == {f"web.{n}": 1 for n in range(1, 11)}  # nothing left twice
    assert counts(c) == {"web": 10}
