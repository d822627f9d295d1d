"""Documented behaviour checked end to end on real local clusters (README, docs/ctl.md,
docs/architecture.md, docs/failure-model.md): the instance environment, `--env-file`,
`--settings`, `-a` isolation, the `--scheduler` list order, `$PORT` round-robin, the 16 KiB line
cut, the restart backoff with its `crashed` rows, `stop_timeout` with its `stopping` rows, the
ttl + 5 s grace after a scheduler restart and the 4 s link-silence redial.

Timings are read from what the processes themselves record (unix time) or from polling the
truth every 20-50 ms, and checked with generous tolerances; nothing waits by sleeping.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from common.states import agent_word
from tests.cluster import Cluster, procs, wait_for
from tests.cluster.harness import ROOT
from tests.cluster.oracles import events, stubborn

AGENT_ENV = {"FORMATION_SCHEDULER": "10.255.255.1:1", "FORMATION_CAPACITY": "3",
             "FORMATION_SOMETHING_ELSE": "x", "AGENT_ONLY": "from-agent", "SHARED": "agent"}


@pytest.fixture(scope="module")
def shared(etcd_url, tmp_path_factory):
    """One agent, started with FORMATION_* settings of its own in its environment; each test
    uses an app of its own on it (which is what `-a` isolation promises)."""
    d = tmp_path_factory.mktemp("documented")
    with Cluster(agents=1, etcd=etcd_url, workdir=str(d), agent_env=AGENT_ENV) as c:
        yield c


def app_dir(base, procfile: str, settings: str = ""):
    base.mkdir(exist_ok=True)
    (base / "Procfile").write_text(procfile)
    if settings:
        (base / "formation.toml").write_text(settings)
    return base


def rows(c: Cluster, app: str) -> list[dict]:
    return c.ps(app=app)


def row(c: Cluster, app: str, iid: str) -> dict:
    return next(r for r in rows(c, app) if r["id"] == iid)


def metric(c: Cluster, part: str, name: str, **labels: str) -> float:
    """The value of the series `name` with exactly these labels, in any order (0 if absent)."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for key, value in c.scrape(part).items():
        base, _, rest = key.partition("{")
        if base == name and set(filter(None, rest.rstrip("}").split(","))) == want:
            return value
    return 0.0


# ---- the instance environment, --env-file, --env ---------------------------------------------

def test_instance_environment(shared, tmp_path):
    d = app_dir(tmp_path / "app", "worker: sleep 100000\n")
    envfile = tmp_path / "vars.env"
    envfile.write_text("# a comment\nFILE_VAR=from-file\nexport QUOTED=\"a b\"\n\n"
                       "SHARED=from-file\n")
    shared.ctl("deploy", str(d / "Procfile"), "--env-file", str(envfile), "--env",
               "SHARED=release", "--env", "ONLY_FLAG=1", app="envs")
    shared.ctl("scale", "worker=2", "--wait", "--timeout", "20", app="envs")
    for r in rows(shared, "envs"):
        env = procs.environ(r["pid"])
        assert env["FORMATION_APP"] == "envs" and env["FORMATION_INSTANCE"] == r["id"]
        assert env["FORMATION_TYPE"] == "worker" and env["FORMATION_RELEASE"] == "1"
        assert env["PORT"] == str(r["port"]) and r["port"] > 0
        # the agent's own environment is inherited, without its FORMATION_* settings
        assert env["AGENT_ONLY"] == "from-agent" and env["FTEST_RUN"] == shared.run_id
        assert not {k for k in env if k.startswith("FORMATION_")} - {
            "FORMATION_APP", "FORMATION_INSTANCE", "FORMATION_TYPE", "FORMATION_RELEASE"}, env
        # the release's env (--env-file, then --env) over the agent's
        assert env["FILE_VAR"] == "from-file" and env["QUOTED"] == "a b"
        assert env["SHARED"] == "release" and env["ONLY_FLAG"] == "1"
    assert len({r["port"] for r in rows(shared, "envs")}) == 2
    shared.ctl("scale", "worker=0", "--wait", "--timeout", "20", app="envs")


# ---- --settings ----------------------------------------------------------------------------

def test_settings_names_another_file_than_the_one_beside_the_procfile(shared, tmp_path):
    d = app_dir(tmp_path / "app", "worker: sleep 100000\n",
                "[worker]\ncolour = 'blue'\n")  # formation.toml beside: would be refused
    refused = shared.ctl("deploy", str(d / "Procfile"), check=False, app="settings")
    assert refused.returncode == 2 and "colour" in refused.stderr
    other = tmp_path / "other.toml"
    other.write_text("[worker.health]\ntype = \"exec\"\ncommand = \"false\"\ninterval = 0.2\n"
                     "grace = 60\n")
    shared.ctl("deploy", str(d / "Procfile"), "--settings", str(other), app="settings")
    shared.ctl("scale", "worker=1", app="settings")
    # The check from --settings is what the agent runs: never passes, so it stays starting.
    r = wait_for(lambda: (x := row(shared, "settings", "worker.1"))["reason"].startswith(
        "exec check") and x, 15, what="worker.1 to run the exec check from --settings")
    assert r["state"] == "starting" and r["pid"] > 0, r
    bad = tmp_path / "bad.toml"
    bad.write_text("[worker]\nstop_timeout = 'soon'\n")
    refused = shared.ctl("deploy", str(d / "Procfile"), "--settings", str(bad), check=False,
                         app="settings")
    assert refused.returncode == 2 and str(bad) in refused.stderr, refused.stderr
    assert shared.client.formation("settings").release == 1
    shared.ctl("scale", "worker=0", "--wait", "--timeout", "20", app="settings")


# ---- -a: apps are isolated -----------------------------------------------------------------

def test_apps_are_isolated(shared, tmp_path):
    d = app_dir(tmp_path / "app", "worker: sleep 100000\n")
    for app in ("alpha", "beta"):
        shared.ctl("-a", app, "deploy", str(d / "Procfile"))
    shared.ctl("scale", "worker=2", "-a", "alpha", "--wait", "--timeout", "20")  # after, too
    shared.ctl("-a", "beta", "scale", "worker=1", "--wait", "--timeout", "20")
    alpha, beta = rows(shared, "alpha"), rows(shared, "beta")
    assert [(r["id"], r["app"]) for r in alpha] == [("worker.1", "alpha"), ("worker.2", "alpha")]
    assert [(r["id"], r["app"]) for r in beta] == [("worker.1", "beta")]
    assert procs.environ(beta[0]["pid"])["FORMATION_APP"] == "beta"
    assert beta[0]["pid"] not in {r["pid"] for r in alpha}
    # the flag wins over FORMATION_APP (which c.ctl sets to "default")
    assert json.loads(shared.ctl("-a", "alpha", "formation", "--json").stdout) == \
        {"worker": {"desired": 2, "running": 2}}
    shared.ctl("-a", "alpha", "scale", "worker=0", "--wait", "--timeout", "20")
    assert rows(shared, "alpha") == []
    assert rows(shared, "beta") == beta  # nothing of beta changed, same process
    assert procs.alive(beta[0]["pid"])
    assert shared.ctl("-a", "alpha", "deploy", str(d / "Procfile"), "--json").stdout
    assert shared.client.formation("beta").release == 1
    assert shared.client.formation("alpha").release == 2
    shared.ctl("-a", "beta", "scale", "worker=0", "--wait", "--timeout", "20")


# ---- --scheduler: addresses tried in order ------------------------------------------------

def test_scheduler_addresses_are_tried_in_order(shared, etcd_url, tmp_path):
    d = app_dir(tmp_path / "app", "worker: sleep 100000\n")
    shared.ctl("deploy", str(d / "Procfile"), app="order")
    # Another scheduler ("order" unknown there) of the same CA: one certificate for both.
    with Cluster(agents=0, etcd=etcd_url, certs=shared.certs) as other:
        dead = f"127.0.0.1:{_closed_port()}"

        def formation(addresses: str, how: str) -> subprocess.CompletedProcess:
            env = {**os.environ, "FORMATION_APP": "order", **shared.tls_env()}
            env.pop("FORMATION_SCHEDULER", None)
            args = ["--scheduler", addresses] if how == "flag" else []
            if how == "env":
                env["FORMATION_SCHEDULER"] = addresses
            return subprocess.run([sys.executable, "-m", "ctl", *args, "formation", "--json"],
                                  capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

        for how in ("flag", "env"):
            first = formation(f"{shared.listen},{other.listen}", how)
            assert first.returncode == 0 and json.loads(first.stdout) == \
                {"worker": {"desired": 0, "running": 0}}, (how, first.stderr)
            second = formation(f"{other.listen},{shared.listen}", how)
            assert second.returncode == 0 and json.loads(second.stdout) == {}, \
                (how, second.stdout, second.stderr)
            past_dead = formation(f"{dead},{shared.listen}", how)
            assert past_dead.returncode == 0 and json.loads(past_dead.stdout) == \
                {"worker": {"desired": 0, "running": 0}}, (how, past_dead.stderr)
        none = formation(dead, "flag")
        assert none.returncode == 1 and none.stderr.count("\n") == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once closed


# ---- $PORT: round-robin, checked free -------------------------------------------------------

def test_ports_are_handed_out_round_robin_and_checked_free(etcd_url, tmp_path):
    d = app_dir(tmp_path / "app", "worker: sleep 100000\n")
    lo = random.randrange(20_000, 28_000, 10)
    with Cluster(agents=0, spare_hosts=1, etcd=etcd_url, workdir=str(d)) as c, \
            socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", lo + 2))
        taken.listen()
        c.start_agent("agent-1", port_range=f"{lo}-{lo + 3}")
        wait_for(lambda: [a.connected for a in c.client.agents()] == [True], 20)
        c.ctl("deploy", str(d / "Procfile"))

        def port_of_new_worker2() -> int:
            c.ctl("scale", "worker=2", "--wait", "--timeout", "20")
            return row(c, "default", "worker.2")["port"]

        c.ctl("scale", "worker=1", "--wait", "--timeout", "20")
        assert row(c, "default", "worker.1")["port"] == lo
        seen = [port_of_new_worker2()]
        for _ in range(2):
            c.ctl("scale", "worker=1", "--wait", "--timeout", "20")
            seen.append(port_of_new_worker2())
        # lo+1; then not lo+1 again at once, nor lo+2 (in use by someone else): lo+3; then
        # round the range: lo is worker.1's, so lo+1.
        assert seen == [lo + 1, lo + 3, lo + 1], (lo, seen)
        assert row(c, "default", "worker.1")["port"] == lo


# ---- output: lines longer than 16 KiB are cut -----------------------------------------------

def logged(c: Cluster, app: str, iid: str, last: str) -> list[str]:
    out = c.ctl("logs", iid, "--json", "--tail", "100", app=app).stdout
    got = [json.loads(x)["text"] for x in out.splitlines()]
    return got if last in got else []


def test_lines_longer_than_16_kib_are_cut(shared, tmp_path):
    script = tmp_path / "long.py"
    script.write_text("import sys, time\n"
                      "sys.stdout.write('a' * 40000 + '\\n' + 'after\\n')\n"
                      "sys.stdout.flush()\n"
                      "time.sleep(100000)\n")
    d = app_dir(tmp_path / "app", f"long: python3 {script}\n")
    shared.ctl("deploy", str(d / "Procfile"), app="lines")
    shared.ctl("scale", "long=1", app="lines")
    got = wait_for(lambda: logged(shared, "lines", "long.1", "after"), 20, interval=0.2,
                   what="the long line and the one after")
    assert got[0] == "a" * 16384 and got[-1] == "after", [(x[:10], len(x)) for x in got]
    assert all(len(x) <= 16384 for x in got)
    shared.ctl("scale", "long=0", "--wait", "--timeout", "20", app="lines")


def test_a_cut_line_leaves_no_fragments(shared, tmp_path):
    script = tmp_path / "long.py"
    script.write_text("import sys, time\n"
                      "for _ in range(20):\n"  # 200,000 bytes: more than one pipe read
                      "    sys.stdout.write('b' * 10000)\n"
                      "    sys.stdout.flush()\n"
                      "sys.stdout.write('\\nafter\\n')\n"
                      "sys.stdout.flush()\n"
                      "time.sleep(100000)\n")
    d = app_dir(tmp_path / "app", f"long: python3 {script}\n")
    shared.ctl("deploy", str(d / "Procfile"), app="fragments")
    try:
        shared.ctl("scale", "long=1", app="fragments")
        got = wait_for(lambda: logged(shared, "fragments", "long.1", "after"), 20,
                       interval=0.2, what="the long line and the one after")
        assert got == ["b" * 16384, "after"], [(x[:10], len(x)) for x in got]
    finally:
        shared.ctl("scale", "long=0", "--wait", "--timeout", "20", app="fragments")


# ---- restart backoff, `crashed` rows ------------------------------------------------------

def test_crash_restarts_at_once_then_after_half_a_second_doubling(shared, tmp_path):
    starts = tmp_path / "starts"
    d = app_dir(tmp_path / "app", f"crash: date +%s.%N >> {starts}; exit 3\n")
    shared.ctl("deploy", str(d / "Procfile"), app="crash")
    shared.ctl("scale", "crash=1", app="crash")

    def times() -> list[float]:
        try:
            return [float(x) for x in starts.read_text().split()]
        except FileNotFoundError:
            return []
    wait_for(lambda: len(times()) >= 5, 20, interval=0.02, what="5 starts")
    # In the 4 s backoff after the 5th start: a `crashed` row with the exit status.
    r = wait_for(lambda: (x := row(shared, "crash", "crash.1"))["state"] == "crashed" and x,
                 3, interval=0.05, what="a crashed row")
    assert r["reason"] == "exited with code 3" and r["restarts"] >= 4, r
    assert r["pid"] in (0, None) or not procs.alive(r["pid"]), r
    agent = r["agent"]
    labels = {"app": "crash", "type": "crash"}
    assert metric(shared, agent, "formation_agent_instances", state="crashed", **labels) == 1
    key = {"app": "crash", "id": "crash.1", "release": "1", "generation": "0", "type": "crash"}
    assert metric(shared, agent, "formation_agent_instance_exits_total", **key) >= 5
    assert metric(shared, agent, "formation_agent_instance_restarts_total", **key) >= 4
    wait_for(lambda: len(times()) >= 6, 10, interval=0.05, what="the 6th start")
    t = times()
    gaps = [b - a for a, b in zip(t[:5], t[1:6], strict=True)]
    for gap, want in zip(gaps, [0.0, 0.5, 1.0, 2.0, 4.0], strict=True):
        assert want - 0.05 <= gap <= want * 1.25 + 0.6, (gaps, [0.0, 0.5, 1.0, 2.0, 4.0])
    shared.ctl("scale", "crash=0", "--wait", "--timeout", "20", app="crash")


# ---- stop_timeout, `stopping` rows ----------------------------------------------------------

def test_stop_timeout_sigkills_a_process_that_ignores_sigterm(shared, tmp_path):
    d = app_dir(tmp_path / "app", f"stubborn: {stubborn(tmp_path)}\n",
                "[stubborn]\nstop_timeout = 2\n")
    shared.ctl("deploy", str(d / "Procfile"), app="stop")
    shared.ctl("scale", "stubborn=1", "--wait", "--timeout", "20", app="stop")
    pid = row(shared, "stop", "stubborn.1")["pid"]
    wait_for(lambda: any(e[0] == "start" and e[2] == pid for e in events(tmp_path)), 10)
    asked = time.time()
    shared.ctl("scale", "stubborn=0", app="stop")
    term = wait_for(lambda: [e[3] for e in events(tmp_path) if e[0] == "term" and e[2] == pid],
                    10, interval=0.02, what="the SIGTERM")[0]
    r = row(shared, "stop", "stubborn.1")  # SIGTERM ignored: still there, stopping
    assert r["state"] == "stopping" and r["pid"] == pid, r
    agent = r["agent"]
    wait_for(lambda: not procs.alive(pid), 10, interval=0.02, what="the SIGKILL")
    killed = time.time()
    assert term - asked < 2.0, f"SIGTERM {term - asked:.2f}s after the scale"
    assert 2.0 - 0.05 <= killed - term <= 2.0 + 1.0, f"SIGKILL {killed - term:.2f}s after SIGTERM"
    wait_for(lambda: rows(shared, "stop") == [], 10, what="the row to go")
    assert "stubborn.1 did not stop in time; killing it" in shared.log(agent)


# ---- the scheduler's restart grace and the agents' silence redial ---------------------------

def test_restarted_scheduler_waits_ttl_plus_5s_and_silent_link_redials_after_4s(
        make_cluster, tmp_path):
    c = make_cluster(agents=2, agent_ttl=2.0)
    ttl, redial_max, silence = 2.0, 5.0, 4.0  # common/limits.py, docs/failure-model.md

    # A known agent that never comes back after a scheduler restart counts as down only
    # ttl + 5 s after the new scheduler serves.
    c.stop_scheduler()
    c.kill_agent("agent-2")
    t0 = time.monotonic()
    c.start_scheduler()  # returns once it serves (it binds before recovering)
    t1 = time.monotonic()
    last_up = t1

    def down() -> bool:
        nonlocal last_up
        now = time.monotonic()
        state = agent_word(next(a.state for a in c.client.agents() if a.name == "agent-2"))
        if state != "down":
            last_up = now
        return state == "down"
    wait_for(down, ttl + redial_max + 10, interval=0.05, what="agent-2 to count as down")
    seen_down = time.monotonic()
    assert last_up - t1 >= ttl + redial_max - 0.5, f"down after {last_up - t1:.2f}s"
    assert seen_down - t0 <= ttl + redial_max + 3, f"down after {seen_down - t0:.2f}s"
    wait_for(lambda: agent_word(next(a.state for a in c.client.agents()
                                     if a.name == "agent-1")) == "ready", 10)

    # A scheduler that stops answering (frozen; its connection stays open): the agent drops
    # the stream after 4 s of silence and redials, and says it is not connected meanwhile.
    before = c.log("agent-1").count("went silent; reconnecting")
    assert metric(c, "agent-1", "formation_agent_connected") == 1
    sched = c.parts["scheduler"].proc
    sched.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_for(lambda: c.log("agent-1").count("went silent; reconnecting") > before, 15,
                 interval=0.05, what="the agent to notice the silence")
        noticed = time.monotonic() - frozen
        assert metric(c, "agent-1", "formation_agent_connected") == 0
    finally:
        sched.send_signal(signal.SIGCONT)
    # its last word came at most a heartbeat (1 s) before the freeze
    assert silence - 1.0 - 0.1 <= noticed <= silence + 2.5, f"redial after {noticed:.2f}s"
    wait_for(lambda: metric(c, "agent-1", "formation_agent_connected") == 1, 20,
             what="the agent to reconnect")
    wait_for(lambda: any(a.name == "agent-1" and a.connected for a in c.client.agents()), 10)



def test_stopping_instances_are_counted_by_the_agent(shared, tmp_path):
    d = app_dir(tmp_path / "app", f"stubborn: {stubborn(tmp_path)}\n",
                "[stubborn]\nstop_timeout = 3\n")
    shared.ctl("deploy", str(d / "Procfile"), app="stopmetric")
    shared.ctl("scale", "stubborn=1", "--wait", "--timeout", "20", app="stopmetric")
    r = row(shared, "stopmetric", "stubborn.1")
    try:
        shared.ctl("scale", "stubborn=0", app="stopmetric")
        wait_for(lambda: [e for e in events(tmp_path) if e[0] == "term"], 10, interval=0.02)
        assert row(shared, "stopmetric", "stubborn.1")["state"] == "stopping"
        assert metric(shared, r["agent"], "formation_agent_instances", app="stopmetric",
                      type="stubborn", state="stopping") == 1
    finally:
        wait_for(lambda: not procs.alive(r["pid"]), 10)
