"""Every change of the counts is recorded (who, when, before → after), survives a scheduler
restart, and `ctl scale --undo` restores the counts from before the last change."""
from __future__ import annotations

import json

import grpc
import pytest

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler.records import MAX_SCALE_BYTES, ScaleRecord, scales_json


def history(c) -> list[tuple[dict, dict, bool, str]]:
    return [(h["before"], h["after"], h["undo"], h["author"])
            for h in json.loads(c.ctl("formation", "history", "--json").stdout)]


def counts(c) -> dict[str, int]:
    return {t.type: t.desired for t in c.client.formation("default").types}


def test_history_and_undo(cluster):
    cluster.ctl("deploy", "examples/Procfile")
    assert "nothing to undo" in cluster.ctl("scale", "--undo", check=False).stderr
    cluster.ctl("scale", "web=1", "worker=0")  # from whatever a first deploy starts with
    first = len(history(cluster))
    cluster.ctl("scale", "worker=2")
    cluster.ctl("scale", "web=3", "worker=2")  # worker unchanged: only web is recorded
    cluster.ctl("scale", "web=3")              # no change at all: nothing recorded
    me = "operator tester"
    assert history(cluster)[:-first or None] == [({"web": 1}, {"web": 3}, False, me),
                                                 ({"worker": 0}, {"worker": 2}, False, me)]
    out = cluster.ctl("scale", "--undo").stdout
    assert "web=1" in out and counts(cluster) == {"web": 1, "worker": 2}
    assert history(cluster)[0] == ({"web": 3}, {"web": 1}, True, me)
    cluster.ctl("scale", "--undo")  # undoing the undo: back to web=3
    assert counts(cluster) == {"web": 3, "worker": 2}
    text = cluster.ctl("formation", "history", role="viewer").stdout  # a viewer may read it
    assert "web 1→3 (undo)" in text and "worker 0→2" in text
    cluster.restart_scheduler()  # it lives in etcd
    assert len(history(cluster)) == first + 4
    for args in (["scale", "--undo", "web=1"], ["scale"]):
        r = cluster.ctl(*args, check=False)
        assert r.returncode == 2 and "--undo" in r.stderr, (args, r.stderr)
    r = cluster.ctl("scale", "--undo", role="viewer", check=False)
    assert r.returncode == 1 and "viewer may not scale" in r.stderr
    with cluster.channel() as channel, pytest.raises(grpc.RpcError) as e:
        pbg.ControlStub(channel).Scale(pb.ScaleRequest(app="default", counts={"web": 1},
                                                       undo=True), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert counts(cluster) == {"web": 3, "worker": 2}


def test_the_history_is_bounded_in_records_and_bytes():
    many = [ScaleRecord(float(i), "a", {"web": i}, {"web": i + 1}) for i in range(500)]
    data, kept = scales_json(many)
    assert len(kept) == 100 and kept[-1] == many[-1] and len(data) <= MAX_SCALE_BYTES
    wide = [ScaleRecord(float(i), "a" * 255, {f"t{j}": 1 for j in range(100)},
                        {f"t{j}": 10_000 for j in range(100)}) for i in range(100)]
    data, kept = scales_json(wide)
    assert len(data) <= MAX_SCALE_BYTES and kept[-1] == wide[-1] and len(kept) < 100
