"""A process type's `[TYPE.deploy]` settings (README's formation.toml, issue 11), end to end
through a release: read from formation.toml, checked (common/deploysettings.py, one set of
rules for ctl and the API), sent, stored in etcd, loaded back. Not yet used by deploys."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import grpc
import pytest

from common.appdef import AppDefError, ProcessType, Release, effective_deploy
from common.appdef_pb import release_from_pb, type_to_pb
from common.appfiles import parse_settings
from common.deploysettings import Amount, DeploySettings, resolve_amount
from common.limits import MAX_DEPLOY_COUNT
from common.names import MAX_INSTANCES_PER_TYPE
from ctl.main import main as ctl_main
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.records import Snapshot, decode
from tests.cluster import Cluster, wait_for

COMMANDS = {"web": "python3 web.py", "worker": "python3 worker.py"}
ISSUE_BLOCK = ('[web.deploy]\nmax_surge = "25%"\nmax_unavailable = 0\nmin_healthy_time = 2\n'
               'healthy_deadline = 60\nauto_revert = true\n')


def test_the_block_of_the_issue_and_other_spellings_are_read_as_written():
    types = parse_settings(ISSUE_BLOCK, COMMANDS)
    assert types["web"].deploy == DeploySettings("25%", 0, 2.0, 60.0, True)
    assert types["worker"].deploy == DeploySettings()  # no table: all unset
    types = parse_settings('[worker]\ndeploy = { max_unavailable = 3, auto_revert = false }\n'
                           '[web.deploy]\nmax_surge = "100%"\nmax_unavailable = "0%"\n', COMMANDS)
    assert types["worker"].deploy == DeploySettings(max_unavailable=3, auto_revert=False)
    assert types["web"].deploy == DeploySettings(max_surge="100%", max_unavailable="0%")
    types = parse_settings("[low_prio.deploy]\nmax_unavailable = 1\n", {"low-prio": "x"})
    assert types["low-prio"].deploy.max_unavailable == 1  # the Procfile's spelling works too


def test_the_readme_example_parses_and_shows_the_defaults_of_web():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", readme, re.S)
    web = parse_settings(block, {"web": "a"})["web"]
    assert web.deploy == effective_deploy(ProcessType("web", "a")) == DeploySettings(
        "25%", 0, 2.0, 60.0, True)


def test_values_at_the_bounds_are_accepted():
    types = parse_settings(f'[web.deploy]\nmax_surge = {MAX_DEPLOY_COUNT}\n'
                           f'max_unavailable = "100%"\nmin_healthy_time = 3600\n'
                           f'healthy_deadline = 3600\n[worker.deploy]\nmax_unavailable = 1\n'
                           f'min_healthy_time = 0\nhealthy_deadline = 0.001\n', COMMANDS)
    assert types["web"].deploy.healthy_deadline == types["web"].deploy.min_healthy_time
    assert types["worker"].deploy.healthy_deadline == 0.001
    assert MAX_DEPLOY_COUNT == MAX_INSTANCES_PER_TYPE  # a surge beyond any count means nothing


AMOUNT = 'must be a count from 0 to 10000 or a percent from "0%" to "100%", not '
BAD_FILES = [  # (formation.toml, the start of the one-line message)
    ("[web.deploy]\nmax_surge = 2.5\n", f"formation.toml:2: [web.deploy]: max_surge {AMOUNT}2.5"),
    ('[web.deploy]\nmax_surge = "25"\n', f"formation.toml:2: [web.deploy]: max_surge {AMOUNT}'25'"),
    ('[web.deploy]\n\nmax_surge = "abc%"\n', f"formation.toml:3: [web.deploy]: max_surge {AMOUNT}"),
    ('[web.deploy]\nmax_unavailable = "-1%"\n', "formation.toml:2: [web.deploy]: max_unavailable"),
    ('[web.deploy]\nmax_surge = "101%"\n', f"formation.toml:2: [web.deploy]: max_surge {AMOUNT}"),
    ('[web.deploy]\nmax_surge = "12.5%"\n', "formation.toml:2: [web.deploy]: max_surge must"),
    ('[web.deploy]\nmax_surge = " 5%"\n', "formation.toml:2: [web.deploy]: max_surge must"),
    ('[web.deploy]\nmax_surge = "05%"\n', "formation.toml:2: [web.deploy]: max_surge must"),
    ("[web.deploy]\nmax_surge = true\n", f"formation.toml:2: [web.deploy]: max_surge {AMOUNT}True"),
    ("[web.deploy]\nmax_surge = -1\n", f"formation.toml:2: [web.deploy]: max_surge {AMOUNT}-1"),
    ("[web.deploy]\nmax_surge = 10001\n", "formation.toml:2: [web.deploy]: max_surge must"),
    ("[web.deploy]\nmax_unavailable = 99999999999999999999999\n",
     f"formation.toml:2: [web.deploy]: max_unavailable {AMOUNT}9999"),
    ("[web.deploy]\nmax_surge = nan\n", "formation.toml:2: [web.deploy]: max_surge must"),
    ("[web.deploy]\nmax_surge = inf\n", "formation.toml:2: [web.deploy]: max_surge must"),
    ("[web.deploy]\nmax_surge = [1]\n", "formation.toml:2: [web.deploy]: max_surge must"),
    ("[web.deploy]\nmin_healthy_time = nan\n", "formation.toml:2: [web.deploy]: "
     "min_healthy_time must be a number of seconds from 0 to 3600, not nan"),
    ("[web.deploy]\nmin_healthy_time = -1\n", "formation.toml:2: [web.deploy]: min_healthy_time"),
    ("[web.deploy]\nmin_healthy_time = 3601\n", "formation.toml:2: [web.deploy]: min_healthy"),
    ('[web.deploy]\nmin_healthy_time = "2s"\n', "formation.toml:2: [web.deploy]: min_healthy"),
    ("[web.deploy]\nhealthy_deadline = 0\n", "formation.toml:2: [web.deploy]: healthy_deadline "
     "must be a number of seconds above 0, at most 3600, not 0"),
    ("[web.deploy]\nhealthy_deadline = inf\n", "formation.toml:2: [web.deploy]: healthy_deadline"
     " must be a number of seconds above 0, at most 3600, not inf"),
    ("[web.deploy]\nhealthy_deadline = -inf\n", "formation.toml:2: [web.deploy]: healthy_dead"),
    ("[web.deploy]\nhealthy_deadline = 1e300\n", "formation.toml:2: [web.deploy]: healthy_dead"),
    ("[web.deploy]\nhealthy_deadline = true\n", "formation.toml:2: [web.deploy]: healthy_dead"),
    ('[web.deploy]\nauto_revert = "yes"\n',
     "formation.toml:2: [web.deploy]: auto_revert must be true or false, not 'yes'"),
    ("[web.deploy]\nauto_revert = 1\n", "formation.toml:2: [web.deploy]: auto_revert must be"),
    ("[web.deploy]\nmax_surge = 1\nsurge = 2\n",
     "formation.toml:3: [web.deploy]: unknown key(s) surge"),
    ("[web]\ndeploy = 3\n", "formation.toml:2: [web.deploy]: must be a table"),
    # the rules between settings, at the line of the key concerned
    ("[web.deploy]\nmax_surge = 0\nmax_unavailable = 0\n", "formation.toml:3: [web.deploy]: "
     "max_surge and max_unavailable cannot both be 0: no instance could ever be replaced"),
    ('[web.deploy]\nmax_surge = "0%"\nmax_unavailable = "0%"\n', "formation.toml:3: [web.deploy]: "
     "max_surge and max_unavailable cannot both be 0"),
    ("[web.deploy]\nmax_surge = 0\n", "formation.toml:2: [web.deploy]: max_surge and "
     "max_unavailable cannot both be 0 (max_unavailable is 0 by default for a type with a "
     "health check)"),
    ("[worker.deploy]\nmax_unavailable = 0\n", "formation.toml:2: [worker.deploy]: max_surge "
     "and max_unavailable cannot both be 0 (max_surge is 0 by default for a type without a "
     "health check)"),
    ("[web]\nat_most_once = true\n[web.deploy]\nmax_surge = 1\n",
     "formation.toml:4: [web.deploy]: max_surge must be 0 for an at_most_once type: it always "
     "stops the old copy before the new one starts"),
    ('[worker]\nat_most_once = true\n[worker.deploy]\nmax_surge = "1%"\nmax_unavailable = 1\n',
     "formation.toml:4: [worker.deploy]: max_surge must be 0 for an at_most_once type"),
    ("[web]\nat_most_once = true\n[web.deploy]\nmax_unavailable = 0\n",
     "formation.toml:4: [web.deploy]: max_surge and max_unavailable cannot both be 0 (max_surge "
     "is 0 by default for an at_most_once type)"),
    ("[web.deploy]\nmin_healthy_time = 61\n", "formation.toml:2: [web.deploy]: healthy_deadline "
     "60 (the default) is below min_healthy_time 61"),
    ("[web.deploy]\nmin_healthy_time = 10\nhealthy_deadline = 9.5\n",
     "formation.toml:3: [web.deploy]: healthy_deadline 9.5 is below min_healthy_time 10"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_bad_deploy_settings_are_one_line_naming_the_file_and_line(text, message):
    with pytest.raises(AppDefError) as e:
        parse_settings(text, COMMANDS)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_the_defaults_depend_on_the_type():
    types = parse_settings('[api.health]\ntype = "http"\npath = "/up"\n[job]\nat_most_once = true\n'
                           '[sched]\nat_most_once = true\n[sched.health]\ntype = "tcp"\n',
                           {"web": "a", "api": "b", "worker": "c", "job": "d", "sched": "e"})
    surges: tuple[Amount, Amount] = ("25%", 0)
    in_place: tuple[Amount, Amount] = (0, "25%")
    expected = {"web": surges,        # web's default tcp check is a check
                "api": surges,        # a check of its own
                "worker": in_place,   # no check: nothing says a new copy serves
                "job": in_place,      # at_most_once: never two copies
                "sched": in_place}    # at_most_once, even with a check
    for name, (surge, unavailable) in expected.items():
        assert effective_deploy(types[name]) == DeploySettings(surge, unavailable, 2.0, 60.0,
                                                               True), name
    # only what is unset is filled in
    web = parse_settings("[web.deploy]\nmax_unavailable = 2\nauto_revert = false\n",
                         {"web": "a"})["web"]
    assert effective_deploy(web) == DeploySettings("25%", 2, 2.0, 60.0, False)


def test_resolve_amount_rounds_as_kubernetes():
    assert resolve_amount(3, 10, True) == 3 and resolve_amount(0, 10, True) == 0
    assert resolve_amount("25%", 10, True) == 3 and resolve_amount("25%", 10, False) == 2
    assert resolve_amount("25%", 1, True) == 1 and resolve_amount("25%", 3, False) == 0
    assert resolve_amount("100%", 7, False) == 7 and resolve_amount("0%", 7, True) == 0


def test_round_trip_files_pb_appdef_json_appdef():
    types = parse_settings(ISSUE_BLOCK + '[worker.deploy]\nmax_surge = 0\nmax_unavailable = "50%"'
                           '\nmin_healthy_time = 0\n', {**COMMANDS, "clock": "c"})
    wire = pb.DeployRequest(app="a", types=[type_to_pb(t) for t in types.values()])
    back, _, _, _ = release_from_pb(pb.DeployRequest.FromString(wire.SerializeToString()))
    assert back == types
    release = Release(4, back, {}, 1.5)
    assert Release.from_json(release.to_json()) == release
    loaded = Release.from_json(release.to_json()).types
    assert loaded["clock"].deploy == DeploySettings()  # unset stays unset: not 0, not a default
    assert loaded["worker"].deploy.max_surge == 0 and loaded["web"].deploy.max_unavailable == 0


def test_unset_and_zero_are_told_apart_on_the_wire():
    zero = type_to_pb(ProcessType("w", "x", deploy=DeploySettings(0, 1, 0.0, 1.0, False)))
    unset = type_to_pb(ProcessType("w", "x"))
    assert zero.deploy.WhichOneof("max_surge") == "max_surge_count"
    assert zero.deploy.HasField("min_healthy_time") and zero.deploy.HasField("auto_revert")
    assert unset.deploy.WhichOneof("max_surge") is None
    assert not unset.deploy.HasField("min_healthy_time")
    assert not unset.deploy.HasField("auto_revert")
    percent = type_to_pb(ProcessType("w", "x", deploy=DeploySettings(max_unavailable="0%")))
    assert percent.deploy.WhichOneof("max_unavailable") == "max_unavailable_percent"


# A release as stored in etcd before [TYPE.deploy] existed (the code of the commit before).
OLD_RELEASE = (
    '{"created": 1700000000.5, "env": {"K": "V"}, "types": {"web": {"at_most_once": false, '
    '"command": "python3 web.py", "health": {"command": "", "failures": 3, "grace": 60.0, '
    '"interval": 5.0, "path": "/healthz", "timeout": 2.0, "type": "http"}, "name": "web", '
    '"stop_timeout": 10.0}, "worker": {"at_most_once": true, "command": "python3 worker.py", '
    '"health": {"command": "", "failures": 3, "grace": 60.0, "interval": 5.0, "path": "/", '
    '"timeout": 2.0, "type": ""}, "name": "worker", "stop_timeout": 10.0}}, "version": 1}')


def test_a_release_stored_before_deploy_settings_loads_with_all_unset():
    snap = Snapshot()
    decode(snap, ["apps", "shop", "releases", "1"], OLD_RELEASE.encode())
    release = snap.releases["shop"][1]
    assert {t.deploy for t in release.types.values()} == {DeploySettings()}
    assert effective_deploy(release.types["web"]).max_surge == "25%"
    assert effective_deploy(release.types["worker"]).max_surge == 0  # at_most_once
    assert json.loads(release.to_json())["types"]["web"]["deploy"]["max_surge"] is None


# ---- the API: the same rules for every client ------------------------------------------------

def deploy_request(at_most_once: bool = False, health: str = "", **deploy) -> pb.DeployRequest:
    return pb.DeployRequest(app="dset", types=[pb.ProcessType(
        name="web", command="python3 web.py", at_most_once=at_most_once,
        health=pb.HealthCheck(type=health), deploy=pb.DeploySettings(**deploy))])


BAD_API = [  # (id, request, what the message says)
    ("surge-negative", deploy_request(max_surge_count=-1),
     f"process type 'web': deploy max_surge {AMOUNT}-1"),
    ("surge-huge", deploy_request(max_surge_count=2**31 - 1), "deploy max_surge must be"),
    ("unavailable-empty-percent", deploy_request(max_unavailable_percent=""),
     f"deploy max_unavailable {AMOUNT}''"),
    ("percent-without-sign", deploy_request(max_surge_percent="25"), "deploy max_surge must"),
    ("percent-over-100", deploy_request(max_surge_percent="101%"), "deploy max_surge must"),
    ("percent-nul", deploy_request(max_surge_percent="2\x005%"), "deploy max_surge must"),
    ("percent-huge", deploy_request(max_surge_percent="9" * 100_000 + "%"),
     "deploy max_surge must"),
    ("min-healthy-nan", deploy_request(min_healthy_time=math.nan),
     "deploy min_healthy_time must be a number of seconds from 0 to 3600, not nan"),
    ("min-healthy-negative", deploy_request(min_healthy_time=-0.5), "deploy min_healthy_time"),
    ("deadline-0", deploy_request(healthy_deadline=0), "deploy healthy_deadline must be a "
     "number of seconds above 0, at most 3600, not 0.0"),
    ("deadline-inf", deploy_request(healthy_deadline=math.inf), "deploy healthy_deadline must"),
    ("deadline-below-min", deploy_request(min_healthy_time=30, healthy_deadline=20),
     "deploy healthy_deadline 20 is below min_healthy_time 30"),
    ("both-zero", deploy_request(max_surge_count=0, max_unavailable_percent="0%"),
     "deploy max_surge and max_unavailable cannot both be 0"),
    ("zero-surge-checked-type", deploy_request(health="http", max_surge_count=0),
     "(deploy max_unavailable is 0 by default for a type with a health check)"),
    ("at-most-once-surge", deploy_request(True, max_surge_percent="25%", max_unavailable_count=1),
     "deploy max_surge must be 0 for an at_most_once type"),
]


@pytest.mark.parametrize("req, message", [(r, m) for _, r, m in BAD_API],
                         ids=[i for i, _, _ in BAD_API])
def test_release_from_pb_refuses_bad_deploy_settings(req, message):
    with pytest.raises(AppDefError) as e:
        release_from_pb(req)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_ctl_deploy_refuses_a_bad_deploy_table_with_exit_2(capsys, tmp_path):
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    (tmp_path / "formation.toml").write_text('[web.deploy]\nmax_surge = "abc%"\n')
    with pytest.raises(SystemExit) as e:  # nothing listens there: exit 2 is before any call
        ctl_main(["--scheduler", "127.0.0.1:9", "deploy", str(tmp_path / "Procfile")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"ctl: {tmp_path}/formation.toml:2: [web.deploy]: max_surge"), err


@pytest.fixture(scope="module")
def deployed(etcd_url):
    with Cluster(agents=1, etcd=etcd_url) as c:
        c.ctl("deploy", "examples/Procfile", app="dset")
        yield c


@pytest.mark.parametrize("req, message", [(r, m) for _, r, m in BAD_API],
                         ids=[i for i, _, _ in BAD_API])
def test_the_api_refuses_bad_deploy_settings_and_changes_nothing(deployed, req, message):
    with deployed.channel() as channel:
        stub = pbg.ControlStub(channel)
        before = stub.GetFormation(pb.GetFormationRequest(app="dset"), timeout=10).release
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert message in e.value.details(), e.value.details()
        assert stub.GetFormation(pb.GetFormationRequest(app="dset"), timeout=10).release == before


def test_settings_are_stored_with_the_release_and_old_releases_still_load(deployed, tmp_path):
    c = deployed
    # a release written by the code before this change, as another writer would put it
    c.etcdctl("put", f"{c.prefix}/apps/legacy/releases/1", OLD_RELEASE)
    c.etcdctl("put", f"{c.prefix}/apps/legacy/current", "1")
    wait_for(lambda: c.client.formation("legacy").release == 1, 10,
             what="the scheduler to load the old release")
    (tmp_path / "Procfile").write_text("web: python3 web.py\nworker: python3 worker.py\n")
    (tmp_path / "formation.toml").write_text(ISSUE_BLOCK + "[worker.deploy]\nmax_unavailable = 2\n")
    out = json.loads(c.ctl("deploy", str(tmp_path / "Procfile"), "--json", app="legacy").stdout)
    assert out["release"] == 2
    stored = {v: Release.from_json(c.etcdctl("get", "--print-value-only",
                                              f"{c.prefix}/apps/legacy/releases/{v}").encode())
              for v in (1, 2)}
    assert stored[2].types["web"].deploy == DeploySettings("25%", 0, 2.0, 60.0, True)
    assert stored[2].types["worker"].deploy == DeploySettings(max_unavailable=2)
    assert {t.deploy for t in stored[1].types.values()} == {DeploySettings()}
