"""Config vars and rollbacks make releases: config persists across deploys, a rollback restores
code and config together, counts never change, values stay with operators; bad input changes
nothing."""
from __future__ import annotations

import json

import grpc
import pytest

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import Cluster, procs


def workers(c: Cluster) -> list[tuple[str, dict[str, str]]]:
    """(command line, FORMATION-less env) of each running worker, read from /proc."""
    out = []
    for i in c.wait_running({"worker.1", "worker.2"}).values():
        env = procs.environ(i.pid)
        with open(f"/proc/{i.pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode().strip()
        out.append((cmd,
                    {k: v for k, v in env.items() if k in ("A", "B", "C")}))
    return out


def on(c: Cluster, version: int) -> None:
    assert {i.release for i in c.instances().values()} == {version}


def releases(c: Cluster) -> list[tuple[int, str, str]]:
    return [(r["version"], r["description"], r["status"])
            for r in json.loads(c.ctl("releases", "--json").stdout)]


def test_config_persists_and_rollback_restores_code_and_config(make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text("worker: sleep 100000\n")
    # Each change rolls out (docs/releases.md); proving each new copy for 2 s is not the point.
    (tmp_path / "formation.toml").write_text("[worker.deploy]\nmin_healthy_time = 0\n")
    c = make_cluster(agents=1, workdir=str(tmp_path))
    for args in (["config", "set", "A=1"], ["rollback"]):  # before any release: exit 2
        r = c.ctl(*args, check=False)
        assert r.returncode == 2 and "no release" in r.stderr, (args, r.stderr)
    c.ctl("deploy", str(tmp_path / "Procfile"), "--env", "A=1")
    c.ctl("scale", "worker=2", "--wait", "--timeout", "30")
    assert json.loads(c.ctl("config", "--json").stdout) == {"A": "1"}
    out = c.ctl("config", "set", "B=2", "A=3", "--wait", "--timeout", "30").stdout
    assert "release v2" in out
    on(c, 2)
    assert all(env == {"A": "3", "B": "2"} for _, env in workers(c))
    assert "No change" in c.ctl("config", "set", "A=3").stdout
    c.ctl("config", "unset", "B", "--wait", "--timeout", "30")
    assert all(env == {"A": "3"} for _, env in workers(c))
    # A deploy's --env goes on top of the config; the config stays.
    (tmp_path / "Procfile").write_text("worker: sleep 200000\n")
    c.ctl("deploy", str(tmp_path / "Procfile"), "--env", "C=4", "--wait", "--timeout", "30")
    assert all(cmd.endswith("sleep 200000") and env == {"A": "3", "C": "4"}
               for cmd, env in workers(c))
    # Rollback (to the one before: v3) restores its code and its config together.
    assert "back to v3: release v5" in c.ctl("rollback", "--wait", "--timeout", "30").stdout
    assert all(cmd.endswith("sleep 100000") and env == {"A": "3"} for cmd, env in workers(c))
    c.ctl("rollback", "v1", "--wait", "--timeout", "30")
    assert all(env == {"A": "1"} for _, env in workers(c))
    assert releases(c) == [(6, "Rollback to v1", "current"),
                           (5, "Rollback to v3", "superseded"),
                           (4, "Deploy", "superseded"), (3, "Unset B", "superseded"),
                           (2, "Set A, B", "superseded"), (1, "Deploy", "superseded")]
    # Counts never changed; a viewer may list releases but not read the config.
    assert {t.type: t.desired for t in c.client.formation("default").types} == {"worker": 2}
    r = c.ctl("config", role="viewer", check=False)
    assert r.returncode == 1 and "viewer may not read config vars" in r.stderr
    assert c.ctl("releases", role="viewer").returncode == 0
    log = c.log("scheduler")
    assert "operator tester: config of default: Set A, B (v2)" in log
    assert "=3" not in log and "=4" not in log  # names only, never values


@pytest.mark.parametrize("args, words", [
    (["config", "set", "1A=x"], "KEY=VALUE"),
    (["config", "set", "A"], "KEY=VALUE"),
    (["config", "unset", "no-such-name!"], "invalid environment variable name"),
    (["rollback", "v99"], "v99 is not kept"),
    (["rollback", "v1"], "v1 is the current release already"),
    (["rollback", "abc"], "a release is vN"),
    (["rollback", "v0"], "a release is vN"),
])
def test_bad_changes_are_refused_in_one_line_and_change_nothing(cluster, args, words):
    cluster.ctl("deploy", "examples/Procfile")
    r = cluster.ctl(*args, check=False)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert [v for v, _, _ in releases(cluster)] == [1]


def test_the_api_refuses_hostile_config_changes(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    hostile = [pb.SetConfigRequest(app="default", set={"A": "x\0y"}),
               pb.SetConfigRequest(app="default", set={"A": "x" * (300 * 1024)}),
               pb.SetConfigRequest(app="default", set={"A": "1"}, unset=["A"]),
               pb.SetConfigRequest(app="default", unset=["\0"]),
               pb.SetConfigRequest(app="default", unset=["A"] * 1001),
               pb.SetConfigRequest(app="default"),
               pb.SetConfigRequest(app="../etc", set={"A": "1"})]
    with cluster.channel() as channel:
        stub = pbg.ControlStub(channel)
        for request in hostile:
            with pytest.raises(grpc.RpcError) as e:
                stub.SetConfig(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        for version in (-1, 2**62):
            with pytest.raises(grpc.RpcError) as e:
                stub.Rollback(pb.RollbackRequest(app="default", version=version), timeout=10)
            assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                      grpc.StatusCode.NOT_FOUND)
    assert [v for v, _, _ in releases(cluster)] == [1]
