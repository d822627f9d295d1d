"""Serving, as a load balancer sees it: copies answering HTTP, sampled every 20 ms
(tests/cluster/serving.py). A drain moves every instance of an agent without a moment with
fewer copies serving than the formation asks for."""
from __future__ import annotations

import os
import signal

from tests.cluster import wait_for
from tests.cluster.serving import Serving

# A server that takes half a second to boot, like a real app loading its code.
SLOW_WEB = """\
import http.server, os, time
time.sleep(0.5)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers()
        self.wfile.write(b"ok\\n")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"""
SETTINGS = """\
[web.health]
type = "http"
path = "/healthz"
interval = 0.2
grace = 30
"""


def slow_web(make_cluster, tmp_path):
    (tmp_path / "slowweb.py").write_text(SLOW_WEB)
    (tmp_path / "Procfile").write_text("web: python3 slowweb.py\n")
    (tmp_path / "formation.toml").write_text(SETTINGS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=4", "--wait", "--timeout", "30")
    return c


def test_the_oracle_sees_a_copy_that_stops_serving(make_cluster, tmp_path):
    """So that `drops == []` below means something: a killed copy is missed for its reboot."""
    c = slow_web(make_cluster, tmp_path)
    with Serving(c, floor=4) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 4, 10)
        os.kill(c.instances()["web.2"].pid, signal.SIGKILL)
        wait_for(lambda: serving.drops and serving.last == 4, 20,
                 what="web.2 restarted and serving again")
    assert serving.fewest == 3 and len(serving.drops) >= 5  # ~0.5 s of reboot at 20 ms


def test_a_drain_never_lets_fewer_copies_serve_than_desired(make_cluster, tmp_path):
    c = slow_web(make_cluster, tmp_path)
    victim = c.instances()["web.1"].agent
    with Serving(c, floor=4) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == 4, 10,
                 what="every copy serving before the drain")
        c.ctl("drain", victim, "--wait", "--timeout", "60")
        wait_for(lambda: not [i for i in c.instances().values() if i.agent == victim], 30)
    assert serving.samples > 50, serving.samples
    assert serving.drops == [], f"fewer than 4 serving at (s, n): {serving.drops[:20]}"
