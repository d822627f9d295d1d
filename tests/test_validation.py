"""Hardening: no input may wedge the scheduler. A release is validated once, on the server, for
every client (common/appdef_pb.py: type_from_pb, release_from_pb); ctl checks the same rules
first for messages that name the file and line. Bounds: common/limits.py."""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

import grpc
import pytest

from common.appdef import DEFAULT_FAILURES, DEFAULT_INTERVAL
from common.appdef_pb import release_from_pb, type_from_pb
from common.limits import (
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VARS,
    MAX_HEALTH_PATH_BYTES,
    MAX_TYPES_PER_RELEASE,
)
from ctl import deploy as ctl_deploy
from ctl.main import main as ctl_main
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import Cluster


def health(**kw) -> pb.HealthCheck:
    return pb.HealthCheck(**kw)


def ptype(name: str = "web", command: str = "python3 web.py", **kw) -> pb.ProcessType:
    return pb.ProcessType(name=name, command=command, **kw)


def request(*types: pb.ProcessType, env: dict[str, str] | None = None) -> pb.DeployRequest:
    return pb.DeployRequest(app="bad", types=list(types) or [ptype()], env=env or {})


# (id, request, what the one-line message says, whether the server needs release_from_pb)
BAD: list[tuple[str, pb.DeployRequest, str, bool]] = [
    ("nul-in-command", request(ptype(command="sleep 100\x00000")),
     "command contains a NUL byte", False),
    ("blank-command", request(ptype(command=" \t")), "has no command", False),
    ("huge-command", request(ptype(command="x" * (MAX_COMMAND_BYTES + 1))),
     f"command is {MAX_COMMAND_BYTES + 1} bytes, more than {MAX_COMMAND_BYTES}", False),
    ("stop-timeout-nan", request(ptype(stop_timeout=math.nan)),
     "stop_timeout must be a number of seconds from 0 to 3600, not nan", False),
    ("stop-timeout-inf", request(ptype(stop_timeout=math.inf)), "stop_timeout must be", False),
    ("stop-timeout-negative", request(ptype(stop_timeout=-1)), "stop_timeout must be", False),
    ("stop-timeout-huge", request(ptype(stop_timeout=1e9)), "stop_timeout must be", False),
    ("interval-0", request(ptype(health=health(type="tcp", interval=0))),
     "health interval must be a number of seconds from 0.1 to 3600, not 0.0", False),
    ("interval-nan", request(ptype(health=health(type="tcp", interval=math.nan))),
     "health interval must be", False),
    ("interval-huge", request(ptype(health=health(type="tcp", interval=1e300))),
     "health interval must be", False),
    ("timeout-negative", request(ptype(health=health(type="tcp", timeout=-1))),
     "health timeout must be", False),
    ("timeout-huge", request(ptype(health=health(type="tcp", timeout=3601))),
     "health timeout must be", False),
    ("grace-inf", request(ptype(health=health(type="tcp", grace=math.inf))),
     "health grace must be", False),
    ("failures-0", request(ptype(health=health(type="tcp", failures=0))),
     "health failures must be a whole number from 1 to 1000, not 0", False),
    ("failures-negative", request(ptype(health=health(type="tcp", failures=-5))),
     "health failures must be", False),
    ("failures-huge", request(ptype(health=health(type="tcp", failures=2**31 - 1))),
     "health failures must be", False),
    ("exec-without-command", request(ptype(health=health(type="exec"))),
     "health command is required for type 'exec' and only for it", False),
    ("exec-blank-command", request(ptype(health=health(type="exec", command="  "))),
     "health command is required", False),
    ("tcp-with-command", request(ptype(health=health(type="tcp", command="true"))),
     "health command is required", False),
    ("exec-nul-command", request(ptype(health=health(type="exec", command="a\x00b"))),
     "health command contains a NUL byte", False),
    ("exec-huge-command",
     request(ptype(health=health(type="exec", command="x" * (MAX_COMMAND_BYTES + 1)))),
     "health command is", False),
    ("path-crlf", request(ptype(health=health(type="http", path="/a\r\nX-Evil: 1"))),
     "health path must start with '/' and be printable ASCII without spaces", False),
    ("path-relative", request(ptype(health=health(type="http", path="healthz"))),
     "health path must start with '/'", False),
    ("path-space", request(ptype(health=health(type="http", path="/a b"))),
     "health path must", False),
    ("path-non-ascii", request(ptype(health=health(type="http", path="/\u00e9"))),
     "health path must", False),
    ("path-huge", request(ptype(health=health(type="http", path="/" + "a" * 1024))),
     "health path must", False),
    ("health-type", request(ptype(health=health(type="udp"))), "health type must be one of",
     False),
    ("type-name", request(ptype(name="Web")), "invalid process type name 'Web'", False),
    ("type-name-huge", request(ptype(name="a" * 100_000)), "invalid process type name", False),
    ("no-types", pb.DeployRequest(app="bad"), "at least one process type", False),
    ("type-twice", request(ptype(), ptype()), "defined twice", False),
    ("too-many-types",
     request(*[ptype(f"t{i}", "true") for i in range(MAX_TYPES_PER_RELEASE + 1)]),
     f"{MAX_TYPES_PER_RELEASE + 1} process types, more than {MAX_TYPES_PER_RELEASE}", True),
    ("env-nul-value", request(env={"K": "a\x00b"}), "variable K contains a NUL byte", True),
    ("env-non-ascii-name", request(env={"\u00c9T\u00c9": "1"}),
     "invalid environment variable name", False),
    ("env-digit-first", request(env={"1A": "1"}), "invalid environment variable name", False),
    ("env-name-huge", request(env={"A" * (MAX_ENV_NAME_BYTES + 1): "1"}),
     "invalid environment variable name", False),
    ("env-too-many", request(env={f"V{i}": "" for i in range(MAX_ENV_VARS + 1)}),
     f"{MAX_ENV_VARS + 1} variables, more than {MAX_ENV_VARS}", True),
    ("env-too-big", request(env={"A": "x" * MAX_ENV_BYTES}), "more than 262144", True),
    # JSON escapes a control character to 6 bytes: small on the wire, too big for etcd
    ("release-too-big-as-stored", request(env={"A": "\x01" * 200_000}),
     "the release is 1200", True),
]
BAD_IDS = [case[0] for case in BAD]


@pytest.mark.parametrize("req, message", [(r, m) for _, r, m, _ in BAD], ids=BAD_IDS)
def test_release_from_pb_refuses_with_one_line(req, message):
    with pytest.raises(ValueError) as e:
        release_from_pb(req)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_what_the_api_may_leave_unset_takes_the_defaults():
    types, env, _, _ = release_from_pb(request(
        ptype(stop_timeout=0, health=health(type="http")),
        ptype("worker", "python3 worker.py", health=health(interval=-1, path="bogus")),
        env={"BIG": "x" * 100_000, "EMPTY": "", "PEM": "-----BEGIN-----\nabc\n"}))
    web = types["web"]
    assert web.stop_timeout == 0  # proto3 cannot tell 0 from unset: 0 is kept, as before
    assert web.health.path == "/" and web.health.interval == DEFAULT_INTERVAL
    assert web.health.failures == DEFAULT_FAILURES
    assert types["worker"].health.type == ""  # a check without a type is no check at all
    assert len(env["BIG"]) == 100_000


def test_bounds_are_accepted():
    type_from_pb(ptype(stop_timeout=3600, command="x" * MAX_COMMAND_BYTES, health=health(
        type="http", path="/" + "a" * (MAX_HEALTH_PATH_BYTES - 1), interval=0.1, timeout=3600,
        grace=0, failures=1000)))
    env = {f"V{i:03}": "x" * 200 for i in range(MAX_ENV_VARS)}
    release_from_pb(request(*[ptype(f"t{i}", "true") for i in range(MAX_TYPES_PER_RELEASE)],
                            env=env))


# ---- ctl: the same rules, first, with file:line, exit 2, one line -------------------------

def run_ctl(capsys, *argv: str) -> tuple[int, str]:
    """ctl in-process against an address nothing listens on: exit 2 means refused before
    any call (an unreachable scheduler is exit 1)."""
    with pytest.raises(SystemExit) as e:
        ctl_main(["--scheduler", "127.0.0.1:9", *argv])
    return int(e.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("procfile, settings, message", [
    ("worker: sleep 100\x00000\n", None,
     "Procfile:1: the command of 'worker' contains the control character U+0000"),
    ("web: a\n", "[web.health]\nfailures = 3000000000\n",
     "formation.toml:2: [web.health]: failures must be a whole number from 1 to 1000"),
    ("web: a\n", "[web]\nstop_timeout = nan\n", "formation.toml:2: [web]: stop_timeout must"),
    ("web: a\n", "[web.health]\ntype = 'http'\npath = \"/x\\r\\nHost: evil\"\n",
     "formation.toml:3: [web.health]: path must start with '/'"),
    ("web: a\n", "[web.health]\ntype = 'exec'\n", "formation.toml:1: [web.health]: command is"),
    ("web: a\n", "[web.health]\ninterval = 0\n", "formation.toml:2: [web.health]: interval"),
])
def test_ctl_deploy_refuses_bad_files_with_file_line_and_exit_2(capsys, tmp_path, procfile,
                                                                settings, message):
    (tmp_path / "Procfile").write_text(procfile)
    if settings is not None:
        (tmp_path / "formation.toml").write_text(settings)
    code, err = run_ctl(capsys, "deploy", str(tmp_path / "Procfile"))
    assert code == 2, err
    assert err.startswith(f"ctl: {tmp_path}/") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("make_env, message", [
    (lambda p: ["--env-file", str(p)], ".env:2: variable B contains a NUL byte"),
    (lambda p: ["--env", "A=" + "x" * MAX_ENV_BYTES], "env: 262145 bytes of names and values"),
    (lambda p: ["--env", "A=\udcff"], "--env: variable A is not valid UTF-8 text"),
])
def test_ctl_deploy_refuses_bad_env_with_exit_2(capsys, tmp_path,
                                               make_env: Callable[..., list[str]], message):
    (tmp_path / ".env").write_text("A=1\nB=x\x00y\n")
    code, err = run_ctl(capsys, "deploy", "examples/Procfile", *make_env(tmp_path / ".env"))
    assert code == 2 and message in err, err
    assert err.count("\n") == 1


def test_ctl_deploy_warns_about_heroku_corrections_and_says_the_names(capsys, tmp_path):
    (tmp_path / "Procfile").write_text("\ufeffweb: a\r\nCritical_Job: b\r\n")
    (tmp_path / "formation.toml").write_text("[critical_job]\nstop_timeout = 30\n")
    args = argparse.Namespace(procfile=str(tmp_path / "Procfile"), settings=None, env=[],
                              env_file=None, app="default")
    req, renamed = ctl_deploy.prepare(args)
    assert [t.name for t in req.types] == ["web", "critical-job"]
    assert req.types[1].stop_timeout == 30 and renamed == {"Critical_Job": "critical-job"}
    assert capsys.readouterr().err.splitlines() == [
        f"ctl: warning: {tmp_path}/Procfile:2: process type 'Critical_Job' is named "
        f"'critical-job'",
        f"ctl: warning: {tmp_path}/formation.toml:1: [critical_job]: applies to process type "
        f"'critical-job'"]


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "-inf"])
def test_ctl_scale_refuses_a_timeout_that_is_not_a_positive_number(capsys, timeout):
    code, err = run_ctl(capsys, "scale", "web=1", "--wait", f"--timeout={timeout}")
    assert code == 2 and err.startswith("ctl: --timeout must be a positive number"), err


def test_ctl_scale_says_the_name_a_procfile_spelling_became(capsys):
    code, err = run_ctl(capsys, "scale", "critical_job=1")
    assert code == 2 and "a Procfile's 'critical_job' is named 'critical-job'" in err, err


# ---- through a running scheduler: every client gets INVALID_ARGUMENT, nothing changes -----

@pytest.fixture(scope="module")
def deployed(etcd_url):
    with Cluster(agents=1, etcd=etcd_url) as c:
        c.ctl("deploy", "examples/Procfile", app="bad")
        yield c


@pytest.mark.parametrize("req, message", [
    pytest.param(r, m) for _, r, m, _ in BAD],
    ids=BAD_IDS)
def test_the_api_refuses_with_invalid_argument_and_changes_nothing(deployed, req, message):
    with deployed.channel() as channel:
        stub = pbg.ControlStub(channel)
        before = stub.GetFormation(pb.GetFormationRequest(app="bad"), timeout=10).release
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert message in e.value.details(), e.value.details()
        assert stub.GetFormation(pb.GetFormationRequest(app="bad"), timeout=10).release == before


def test_a_100_kb_env_and_heroku_names_deploy_and_run(cluster, tmp_path):
    (tmp_path / "Procfile").write_text("\ufeff# worker\r\nCritical_Job: python3 worker.py\r\n")
    (tmp_path / "formation.toml").write_text("[critical_job]\nstop_timeout = 2\n")
    (tmp_path / ".env").write_text("BIG=" + "x" * 100_000 + "\n")
    result = cluster.ctl("deploy", str(tmp_path / "Procfile"), "--env-file",
                         str(tmp_path / ".env"))
    assert "(critical-job; Critical_Job is now critical-job)" in result.stdout, result.stdout
    assert "ctl: warning: " in result.stderr and "is named 'critical-job'" in result.stderr
    cluster.ctl("scale", "critical-job=1", "--wait", "--timeout", "20")
    from tests.cluster import procs
    (row,) = cluster.ps()
    assert row["id"] == "critical-job.1" and len(procs.environ(row["pid"])["BIG"]) == 100_000


def test_ctl_deploy_json_says_the_names(cluster, tmp_path):
    (tmp_path / "Procfile").write_text("web: python3 web.py\nlow_prio: python3 worker.py\n")
    out = json.loads(cluster.ctl("deploy", str(tmp_path / "Procfile"), "--json").stdout)
    assert out == {"app": "default", "release": 1, "types": ["web", "low-prio"],
                   "renamed": {"low_prio": "low-prio"}, "release_phase": False}

