"""Health checks with real processes: tcp by default for web, http and exec when configured;
starting -> running on the first success, running <-> unhealthy, restart past the threshold."""
from __future__ import annotations

import shutil

from common.states import InstanceState
from tests.cluster import wait_for
from tests.cluster.harness import EXAMPLES


def app(tmp_path, procfile: str, settings: str):
    shutil.copy(f"{EXAMPLES}/web.py", tmp_path / "web.py")
    (tmp_path / "Procfile").write_text(procfile)
    (tmp_path / "formation.toml").write_text(settings)
    return tmp_path


def test_web_gets_a_tcp_check_by_default(make_cluster, tmp_path):
    d = app(tmp_path, "web: python3 web.py\nmute: sleep 100000\n",
            "[mute.health]\ntype = \"tcp\"\ngrace = 60\n")
    c = make_cluster(agents=1, workdir=str(d))
    c.ctl("deploy", str(d / "Procfile"))
    c.ctl("scale", "web=1", "mute=1")
    wait_for(lambda: c.instances()["web.1"].state == InstanceState.RUNNING, 15, what="web.1 healthy")
    # Nothing listens on mute's port: it stays starting, and says why.
    mute = wait_for(lambda: (i := c.instances()["mute.1"]).reason.startswith("tcp check") and i,
                    5, what="mute.1 to say why it is not running")
    assert mute.state == InstanceState.STARTING, mute
    assert mute.pid > 0


def test_failing_http_check_restarts_the_instance(make_cluster, tmp_path):
    d = app(tmp_path, "web: python3 web.py\n",
            "[web.health]\ntype = \"http\"\npath = \"/nope\"\ninterval = 0.2\ntimeout = 1\n"
            "grace = 1.5\nfailures = 2\n")
    c = make_cluster(agents=1, workdir=str(d))
    c.ctl("deploy", str(d / "Procfile"))
    c.ctl("scale", "web=1")
    first = wait_for(lambda: c.instances()["web.1"].pid or None, 10)
    again = wait_for(lambda: (i := c.instances()["web.1"]).restarts >= 1 and i, 15,
                     what="a restart for failing health checks")
    assert "health check failed 2 times: http check: GET /nope -> 404" in \
        c.log("agent-1") + again.reason
    wait_for(lambda: c.instances()["web.1"].pid not in (0, first), 15, what="a new pid")


def test_exec_check_goes_unhealthy_and_back(make_cluster, tmp_path):
    flag = tmp_path / "sick"
    d = app(tmp_path, "worker: sleep 100000\n",
            f"[worker.health]\ntype = \"exec\"\ncommand = \"test ! -e {flag}\"\n"
            f"interval = 0.2\ntimeout = 1\ngrace = 0\nfailures = 1000\n")
    c = make_cluster(agents=1, workdir=str(d))
    c.ctl("deploy", str(d / "Procfile"))
    c.ctl("scale", "worker=1")
    wait_for(lambda: c.instances()["worker.1"].state == InstanceState.RUNNING, 10)
    pid = c.instances()["worker.1"].pid
    flag.write_text("")
    inst = wait_for(lambda: (i := c.instances()["worker.1"]).state == InstanceState.UNHEALTHY and i, 10,
                    what="unhealthy")
    assert "exec check exited with code 1" in inst.reason
    rows = c.ps()
    assert rows[0]["state"] == "unhealthy" and "exec check" in rows[0]["reason"]
    flag.unlink()
    wait_for(lambda: c.instances()["worker.1"].state == InstanceState.RUNNING, 10, what="healthy again")
    assert c.instances()["worker.1"].pid == pid  # below the threshold: not restarted
