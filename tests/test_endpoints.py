"""Control.WatchEndpoints on a real cluster, with a raw gRPC watcher standing in for a load
balancer: sets are whole and versioned, hold only healthy copies, and an instance leaving
them is stopped only once the watcher acknowledged, or at its type's deregister_timeout."""
from __future__ import annotations

import queue
import shutil
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import procs, wait_for
from tests.cluster.harness import EXAMPLES

# web: held until acknowledged (its timeout is far away); api: let go after 1 s.
SETTINGS = """\
[web]
deregister_timeout = 60
[web.health]
type = "http"
path = "/healthz"
interval = 0.2
[api]
deregister_timeout = 1
[api.health]
type = "http"
path = "/healthz"
interval = 0.2
"""


class Watch:
    """One WatchEndpoints stream: sets arrive on `sets`, acks go out with ack()."""

    def __init__(self, channel: grpc.Channel, app: str = "default", ptype: str = "",
                 acknowledges: bool = True, first: pb.EndpointsRequest | None = None) -> None:
        self.out: queue.Queue[pb.EndpointsRequest | None] = queue.Queue()
        self.out.put(first or pb.EndpointsRequest(watch=pb.EndpointsWatch(
            app=app, type=ptype, name="test", acknowledges=acknowledges)))
        self.call = pbg.ControlStub(channel).WatchEndpoints(self._requests())
        self.sets: Iterator[pb.EndpointSet] = iter(self.call)

    def _requests(self) -> Iterator[pb.EndpointsRequest]:
        while (item := self.out.get()) is not None:
            yield item

    def next(self) -> pb.EndpointSet:
        return next(self.sets)

    def ack(self, version: int) -> None:
        self.out.put(pb.EndpointsRequest(ack=pb.EndpointsAck(version=version)))

    def close(self) -> None:
        self.out.put(None)
        self.call.cancel()


def instances_of(s: pb.EndpointSet) -> dict[str, int]:
    return {e.instance: e.port for e in s.endpoints}


def answers(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
        return r.status == 200


def until(watch: Watch, wanted: set[str]) -> pb.EndpointSet:
    """Read sets until one lists exactly `wanted`; every set's endpoints must serve."""
    while True:
        s = watch.next()
        for e in s.endpoints:  # published only once healthy: each one answers now
            assert answers(e.port), f"{e.instance} listed before it serves"
        if set(instances_of(s)) == wanted:
            return s


@pytest.fixture
def shop(make_cluster, tmp_path):
    shutil.copy(f"{EXAMPLES}/web.py", tmp_path / "web.py")
    (tmp_path / "Procfile").write_text("web: python3 web.py\napi: python3 web.py\n")
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=2", "api=2", "--wait", "--timeout", "30")
    return c


def test_a_stop_waits_for_the_watcher_to_acknowledge(shop):
    c = shop
    watch = Watch(c.channel(role="lb", name="edge"))
    try:
        first = until(watch, {"web.1", "web.2", "api.1", "api.2"})
        ps = c.instances()
        assert instances_of(first) == {i: ps[i].port for i in ps}
        assert {e.agent for e in first.endpoints} <= set(c.agent_names)
        watch.ack(first.version)

        pid = ps["web.2"].pid
        c.ctl("scale", "web=1")
        without = until(watch, {"web.1", "api.1", "api.2"})
        assert without.version > first.version
        held_until = time.monotonic() + 1.5  # its stop waits for us, however long we take
        while time.monotonic() < held_until:
            assert procs.alive(pid), "web.2 was stopped before its load balancer let go"
            time.sleep(0.05)
        acked = time.monotonic()
        watch.ack(without.version)
        wait_for(lambda: not procs.alive(pid), 10, what="web.2 stopped once acknowledged")
        assert time.monotonic() - acked < 5

        # Not acknowledged: api.2 is let go at its deregister_timeout (1 s), no sooner.
        pid = ps["api.2"].pid
        asked = time.monotonic()
        c.ctl("scale", "api=1")
        until(watch, {"web.1", "api.1"})
        wait_for(lambda: not procs.alive(pid), 15, what="api.2 stopped at its timeout")
        assert time.monotonic() - asked >= 1.0
        assert c.scrape("scheduler").get("formation_deregister_timeouts_total", 0) >= 1

        # A scale-up is published once the new copy serves (until() probes each one).
        c.ctl("scale", "web=3")
        until(watch, {"web.1", "web.2", "web.3", "api.1"})
    finally:
        watch.close()


def test_a_watcher_that_does_not_acknowledge_holds_nothing_and_viewers_may_not(shop):
    c = shop
    watch = Watch(c.channel(role="viewer", name="viewer"), ptype="web", acknowledges=False)
    try:
        s = until(watch, {"web.1", "web.2"})
        assert {e.type for e in s.endpoints} == {"web"}  # only the type asked for
        pid = c.instances()["web.2"].pid
        c.ctl("scale", "web=1")
        until(watch, {"web.1"})
        wait_for(lambda: not procs.alive(pid), 10, what="web.2 stopped without waiting")
    finally:
        watch.close()
    denied = Watch(c.channel(role="viewer", name="viewer"))
    with pytest.raises(grpc.RpcError) as e:
        denied.next()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not hold back stops" in e.value.details()


BAD_FIRST = [
    (pb.EndpointsRequest(ack=pb.EndpointsAck(version=1)), "first message"),
    (pb.EndpointsRequest(watch=pb.EndpointsWatch(app="no such/app")), "app"),
    (pb.EndpointsRequest(watch=pb.EndpointsWatch(type="Web\x00")), "process type"),
    (pb.EndpointsRequest(watch=pb.EndpointsWatch(name="x" * 300)), "watcher name"),
    (pb.EndpointsRequest(watch=pb.EndpointsWatch(name="a\nb")), "watcher name"),
]


def test_a_bad_first_message_or_a_lying_ack_is_refused(cluster):
    for first, words in BAD_FIRST:
        watch = Watch(cluster.channel(role="lb", name="edge"), first=first)
        with pytest.raises(grpc.RpcError) as e:
            watch.next()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, first
        assert words in e.value.details(), (first, e.value.details())
    # An ack of a version never given ends the stream.
    watch = Watch(cluster.channel(role="lb", name="edge"))
    s = watch.next()
    watch.ack(s.version + 1000)
    with pytest.raises(grpc.RpcError) as e:
        while True:
            watch.next()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "was not given" in e.value.details()
