"""`ctl events` end to end on a real cluster: releases, scales, config changes (names, never
values) and crashes in one feed with their authors, kept across a scheduler restart, followed
with -f; bad --tail values refused. The feed's own rules: tests/test_eventlog.py."""
from __future__ import annotations

import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading

import grpc
import pytest

from ctl.events import as_json, line
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import wait_for
from tests.cluster.harness import ROOT

ME = "operator tester"  # the author with the harness's operator certificate


def feed(c, app: str = "default", role: str = "operator") -> list[dict]:
    return json.loads(c.ctl("events", "--json", app=app, role=role).stdout)


def test_ctl_formats_an_event():
    e = pb.EventInfo(time=1_796_035_267.25, kind="rollout", text="v8 rolled out\x1b[2J",
                     author="alice@laptop")
    assert line(e) == "2026-11-30 10:41:07  rollout   v8 rolled out\\x1b[2J (alice@laptop)"
    assert as_json(e) == {"time": "2026-11-30T10:41:07.250Z", "kind": "rollout",
                          "text": "v8 rolled out\x1b[2J", "author": "alice@laptop"}


def test_the_feed_of_an_app(cluster):
    c = cluster
    assert feed(c) == [] and "has no events yet" in c.ctl("events").stdout
    c.ctl("deploy", "examples/Procfile")
    c.ctl("scale", "web=0", "worker=0")  # from whatever a first deploy starts with
    c.ctl("scale", "web=2")
    first = c.wait_running({"web.1", "web.2"})["web.1"]
    os.kill(first.pid, signal.SIGKILL)
    crashed = wait_for(lambda: [e for e in feed(c) if e["kind"] == "instance"
                                and e["text"].startswith("web.1 v1 crashed")], 15,
                       interval=0.2, what="web.1's crash in the feed")
    assert crashed[0]["author"] == "" and f"on {first.agent}" in crashed[0]["text"]

    secret = secrets.token_hex(16)
    c.ctl("config", "set", f"SECRET_TOKEN={secret}")
    events = feed(c)
    mine = [(e["kind"], e["text"], e["author"]) for e in events
            if e["kind"] in ("release", "config", "scale")]
    assert mine[0] == ("release", "v1 Deploy", ME)
    assert mine[-2:] == [("scale", "web 0 → 2", ME), ("config", "v2 Set SECRET_TOKEN", ME)]
    times = [e["time"] for e in events]
    assert times == sorted(times) and all(t.endswith("Z") for t in times)
    for role in ("operator", "viewer"):  # a viewer may read it: it holds no value
        out = c.ctl("events", "--json", role=role).stdout + c.ctl("events", role=role).stdout
        assert secret not in out and "SECRET_TOKEN" in out
    text = [x for x in c.ctl("events").stdout.splitlines() if "web 0 → 2" in x]
    assert len(text) == 1 and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  scale     web 0 → 2 \(operator tester\)", text[0])

    before = feed(c)
    c.restart_scheduler()  # SIGTERM: what the last second added is written on the way out
    assert feed(c)[:len(before)] == before
    assert feed(c, app="nosuchapp") == []

    follower = subprocess.Popen(
        [sys.executable, "-m", "ctl", "events", "-f", "--json", "--tail", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "FORMATION_SCHEDULER": c.listen, **c.tls_env()})
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for x in follower.stdout or ():
            lines.put(x)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        got: list[dict] = []

        def received(text: str) -> bool:
            while not lines.empty():
                got.append(json.loads(lines.get_nowait()))
            return any(e["text"] == text for e in got)
        # the last event first: then it follows (it subscribes before it reads the feed)
        wait_for(lambda: received("") or got, 15, what="the last event, first")
        assert len(got) == 1 and got[0]["missed"] == 0
        c.ctl("scale", "web=1")
        wait_for(lambda: received("web 2 → 1"), 15, what="the new scale event, followed")
        new = next(e for e in got if e["text"] == "web 2 → 1")
        assert new["kind"] == "scale" and new["author"] == ME and new["missed"] == 0
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(10)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait(10)
        reader.join(10)
    assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""


def test_a_bad_tail_or_app_is_refused_in_one_line(make_cluster):
    c = make_cluster(agents=0)
    for tail in ("-1", "1001", "99999999999"):
        r = c.ctl("events", "--tail", tail, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--tail" in r.stderr, r
    with c.channel() as channel:
        stub = pbg.ControlStub(channel)
        for request in (pb.EventsRequest(app="default", tail=-1),
                        pb.EventsRequest(app="default", tail=2**31 - 1, follow=True),
                        pb.EventsRequest(app="Not An App")):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Events(request, timeout=10))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert "\n" not in (e.value.details() or "")
