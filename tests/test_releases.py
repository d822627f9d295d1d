"""Releases are recorded with who made them and when; `ctl releases` lists them newest first
(their env values never)."""
from __future__ import annotations

import datetime
import getpass
import json
import socket

import grpc
import pytest

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import Cluster


def releases(c: Cluster, role: str = "operator") -> list[dict]:
    return json.loads(c.ctl("releases", "--json", role=role).stdout)


def deploy_raw(c: Cluster, author: str) -> int:
    with c.channel() as channel:
        return pbg.ControlStub(channel).Deploy(pb.DeployRequest(
            app="default", author=author,
            types=[pb.ProcessType(name="worker", command="sleep 1000")]), timeout=10).version


def test_releases_newest_first_with_author_and_status(cluster):
    assert releases(cluster) == []
    cluster.ctl("deploy", "examples/Procfile")
    cluster.ctl("deploy", "examples/Procfile", "--env", "SECRET=hunter2", "--wait")
    found = releases(cluster, role="viewer")  # a viewer may read them: no env in them
    assert [(r["version"], r["status"]) for r in found] == [(2, "current"), (1, "superseded")]
    for r in found:
        assert r["author"] == "operator tester" and r["description"] == "Deploy"
        created = datetime.datetime.strptime(r["created"], "%Y-%m-%dT%H:%M:%SZ")
        age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - created
        assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)
    text = cluster.ctl("releases").stdout
    assert text.splitlines()[0].split() == ["VERSION", "CREATED", "AUTHOR", "DESCRIPTION",
                                            "STATUS"]
    assert "hunter2" not in text and "v2" in text.splitlines()[1]
    # With TLS the author is the certificate; what a client says of itself is ignored.
    assert deploy_raw(cluster, "mallory") == 3
    assert releases(cluster)[0]["author"] == "operator tester"


def test_a_plaintext_scheduler_records_ctls_user_and_checks_it(make_cluster):
    c = make_cluster(agents=0, tls=False)
    c.ctl("deploy", "examples/Procfile")
    assert releases(c)[0]["author"] == f"{getpass.getuser()}@{socket.gethostname()}"
    for bad in ("a\0b", "x" * 256, "tab\there", "\x1b[31mred"):
        with pytest.raises(grpc.RpcError) as e:
            deploy_raw(c, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert [r["version"] for r in releases(c)] == [1]  # nothing changed
    assert deploy_raw(c, "") == 2 and releases(c)[0]["author"] == ""
