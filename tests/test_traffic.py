"""The load-balancer edge, end to end: a client sending requests all the time (kept-alive and
new connections) through a real formation-lb (a real HAProxy) sees no failed request while the
web type is scaled up and down, rolled out to a new release and drained off an agent; and
after a kill -9 of an agent, failures stop within HAProxy's check interval × fall count."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import tempfile

from common.haproxy import haproxy_binary
from ctl.localcluster import free_port
from proto import formation_pb2 as pb
from tests.cluster import wait_for
from tests.cluster.traffic import Load, start_lb

CHECK_INTERVAL, FALL = 1.0, 2  # formation-lb's defaults: HAProxy's `inter 1s fall 2`
# A web as most are: SIGTERM ends it at once (no graceful shutdown), and a request takes a
# little while (20 ms), so some are in flight whenever an instance is stopped. Only a stop that
# waits until its load balancer sends it nothing more, and has nothing in flight, fails none.
ABRUPT_WEB = """\
import http.server, os, time
NAME = os.environ["FORMATION_INSTANCE"].encode()
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        time.sleep(0.02)
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"Hello from " + NAME + b"\\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"""
SETTINGS = """\
[web]
stop_timeout = 5
[web.health]
type = "http"
path = "/healthz"
interval = 0.2
[web.deploy]
min_healthy_time = 0.5
"""

# No skip without HAProxy: `make test` needs it (.ci/run installs it), and a skip would hide
# a missing install behind a green run.
assert haproxy_binary() is not None, "haproxy is not installed: apt-get install haproxy"


def web_of_two(make, tmp_path, **cluster):
    """The abrupt web on a cluster made by `make`, deployed and scaled to 2."""
    (tmp_path / "web.py").write_text(ABRUPT_WEB)
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make(workdir=str(tmp_path), **cluster)
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=2", "--wait", "--timeout", "30")
    return c


def serving(c, n: int) -> bool:
    """Exactly n web copies run (no old one left stopping) and the formation is met."""
    copies = c.copies()
    return sum(copies.values()) == n and len(c.running()) == n


def quiet(load: Load, start: float, what: str, min_answered_by: int = 2) -> None:
    """No request failed since start, and the traffic reached several instances."""
    wait_for(lambda: load.count() > 0 and load.since(load.mark() - 1.0), 5)  # still flowing
    failed = load.failures(start)
    assert not failed, f"{what}: {len(failed)} of {len(load.since(start))} requests " \
                       f"failed, first: {failed[:5]}"
    assert len(load.since(start)) > 50, f"{what}: too few requests to say anything"
    assert len(load.answered_by(start)) >= min_answered_by, load.answered_by(start)


def test_no_request_fails_while_the_web_type_scales_rolls_and_drains(make_cluster, tmp_path):
    c = web_of_two(make_cluster, tmp_path, agents=3)
    port = free_port()
    lb = start_lb(c, port)
    try:
        with Load("127.0.0.1", port) as load:
            wait_for(lambda: len(load.answered_by(0)) == 2, 15,
                     what="both instances answering through formation-lb")
            start = load.mark()
            assert not load.failures(start)

            c.ctl("scale", "web=10", "--wait", "--timeout", "60")
            wait_for(lambda: len(load.answered_by(load.mark() - 2)) == 10, 15,
                     what="all ten instances getting traffic")
            quiet(load, start, "scale 2 -> 10", min_answered_by=10)

            start = load.mark()
            # A rolling deploy: the same code again, a new release, every copy replaced.
            c.ctl("deploy", str(tmp_path / "Procfile"), "--wait", "--timeout", "120")
            wait_for(lambda: serving(c, 10), 30, what="the old release's copies gone")
            quiet(load, start, "rolling deploy of 10")

            start = load.mark()
            c.ctl("scale", "web=2", "--wait", "--timeout", "60")
            wait_for(lambda: serving(c, 2), 30, what="eight copies stopped")
            quiet(load, start, "scale 10 -> 2")

            start = load.mark()
            victim = c.instances()["web.1"].agent
            c.ctl("drain", victim, "--wait", "--timeout", "60")
            wait_for(lambda: serving(c, 2) and victim not in
                     {i.agent for i in c.instances().values()}, 30, what="the drain done")
            quiet(load, start, "drain")

            victim = c.instances()["web.2"].agent
            killed = load.mark()
            c.kill_agent(victim)
            window = CHECK_INTERVAL * FALL + 1.0  # and a second for the check in flight
            wait_for(lambda: load.mark() > killed + window + 2.0, window + 5)
            late = load.failures(killed + window)
            assert not late, f"requests still failing {window} s after kill -9: {late[:5]}"
            assert load.since(killed + window)
    finally:
        lb.stop()
    assert lb.proc.returncode == 0, c.log("lb")[-2000:]


def test_a_machine_cut_off_stops_getting_requests_before_the_scheduler_notices(
        hosts_cluster, tmp_path):
    """HAProxy's own checks: packets to a cut-off machine are dropped, nothing refuses, and
    still no request sent after check interval × fall (and a check's own timeout) fails,
    while the scheduler, with a 10 s agent_ttl, has not yet marked the agent down."""
    c = web_of_two(hosts_cluster, tmp_path, agents=2, agent_ttl=10.0)
    assert len({i.agent for i in c.instances().values()}) == 2  # one on each machine
    port = free_port()
    lb = start_lb(c, port)
    try:
        with Load("127.0.0.1", port) as load:
            wait_for(lambda: len(load.answered_by(0)) == 2, 15,
                     what="both instances answering through formation-lb")
            victim = c.instances()["web.1"].agent
            cut = load.mark()
            c.cut(victim)
            window = CHECK_INTERVAL * FALL + CHECK_INTERVAL + 1.0  # + a check's own timeout
            wait_for(lambda: load.mark() > cut + window + 1.0, window + 5)
            late = load.failures(cut + window)
            assert not late, f"requests failing {window} s after the cut: {late[:5]}"
            assert load.answered_by(cut + window) == {"web.2"}
            assert len(load.since(cut + window)) > 10
            # ... and the scheduler has not noticed yet: the edge did not wait for it.
            agent = next(a for a in c.client.agents() if a.name == victim)
            assert agent.state != pb.AGENT_DOWN, "the scheduler noticed first"
    finally:
        # Requests the client gave up on are still in flight to the cut machine: HAProxy's
        # soft stop would wait for them (up to 10 s). Its stop is tested elsewhere.
        lb.stop(signal.SIGKILL)
        for pidfile in glob.glob(os.path.join(tempfile.gettempdir(), "formation-lb-*", "pid")):
            with open(pidfile) as f:
                if f.read() == str(lb.pid):  # its private directory, left by the SIGKILL
                    shutil.rmtree(os.path.dirname(pidfile))
