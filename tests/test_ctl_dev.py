"""`ctl dev`: the embedded default brings the example up, and Ctrl-C leaves nothing behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid

from common.states import InstanceState
from common.tls import TlsPaths
from ctl.client import Client
from ctl.localcluster import free_port
from tests.cluster import procs, wait_for
from tests.cluster.harness import ROOT


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode().strip()


def test_ctl_dev_runs_the_example_and_ctrl_c_cleans_up(tmp_path):
    run_id = uuid.uuid4().hex[:12]
    where = tmp_path / "context.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMATION_")}
    env.update(FTEST_RUN=run_id, FORMATION_CONTEXT=str(where))
    lb = free_port()
    with open(tmp_path / "dev.log", "w") as out:  # the child keeps its own copy
        dev = subprocess.Popen(
            [sys.executable, "-m", "ctl", "dev", "examples/Procfile", "--agents", "2",
             "--scale", "web=2,worker=1", "--lb-listen", f"127.0.0.1:{lb}"], cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # ctl in another terminal finds the cluster and its operator certificate by itself.
        found = wait_for(lambda: where.exists() and json.loads(where.read_text()), 30,
                         what="ctl dev to write its context")
        assert found["pid"] == dev.pid and (where.stat().st_mode & 0o777) == 0o600
        client = Client(found["scheduler"], TlsPaths(found["tls_ca"], found["tls_cert"],
                                                     found["tls_key"]))

        def converged():
            rows = client.instances("default")
            return sorted(i.id for i in rows if i.state == InstanceState.RUNNING) == \
                ["web.1", "web.2", "worker.1"] and all(procs.alive(i.pid) for i in rows)
        wait_for(converged, 20, what="the example to run")
        client.close()
        ps = subprocess.run([sys.executable, "-m", "ctl", "ps"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
        assert ps.returncode == 0 and "worker.1" in ps.stdout, ps.stderr
        assert "(mutual TLS)" in (tmp_path / "dev.log").read_text()
        # The README's first minute: one address, answered by each web in turn (formation-lb).
        assert f"web at http://127.0.0.1:{lb}/" in (tmp_path / "dev.log").read_text()
        answered: set[str] = set()

        def both() -> bool:
            answered.add(get(f"http://127.0.0.1:{lb}/"))
            return answered == {"Hello from web.1", "Hello from web.2"}
        wait_for(both, 20, what="both webs answering through formation-lb")
        # Logs are streamed like foreman: instance lines with their prefix.
        wait_for(lambda: re.search(r"\d\d:\d\d:\d\d worker\.1 \| worker\.1 tick \d",
                                   (tmp_path / "dev.log").read_text()), 10,
                 what="worker output in the stream")
        assert procs.with_env("FTEST_RUN", run_id)
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
        log = (tmp_path / "dev.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        left = procs.with_env("FTEST_RUN", run_id)
        assert not left, f"ctl dev left processes behind: {left}"
        assert not where.exists()  # the context goes with the cluster
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        for pid in procs.with_env("FTEST_RUN", run_id):
            os.kill(pid, signal.SIGKILL)


def test_ctl_dev_with_a_bad_procfile_starts_nothing(tmp_path):
    (tmp_path / "Procfile").write_text("web python3 web.py\n")
    result = subprocess.run([sys.executable, "-m", "ctl", "dev", str(tmp_path / "Procfile")],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 2 and "Procfile:1:" in result.stderr
    assert result.stderr.count("\n") == 1
