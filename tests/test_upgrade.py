"""An agent upgrade in place (docs/operations.md): SIGHUP re-executes the agent's program in the
same process, which adopts its instances - no instance restarts, no pid changes, no output line
lost - and a plain SIGTERM afterwards still stops them gracefully."""
from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests.cluster import procs, wait_for
from tests.cluster.harness import ROOT

# tick: a line every 20 ms, numbered, so a lost line is a gap; it says how it was stopped.
TICK = r'''
import os, signal, sys, time
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
me, n = os.environ["FORMATION_INSTANCE"], 0
while not stop:
    n += 1
    print(f"{me} tick {n}", flush=True)
    time.sleep(0.02)
print(f"{me} stopped after {n} ticks", flush=True)
'''
PROCFILE = ("web: python3 -m http.server $PORT --bind 127.0.0.1\n"
            "tick: python3 tick.py\n"
            "check: sh -c 'while true; do sleep 1; done'\n")
SETTINGS = ('[check.health]\ntype = "exec"\ncommand = "echo . >> checks; sleep 0.3"\n'
            'interval = 0.5\n'
            "[tick]\nstop_timeout = 5\n")


def app(tmp_path) -> str:
    (tmp_path / "tick.py").write_text(TICK)
    (tmp_path / "Procfile").write_text(PROCFILE)
    (tmp_path / "formation.toml").write_text(SETTINGS)
    return str(tmp_path / "Procfile")


def ticks(text: str, instance: str) -> list[int]:
    return [int(n) for n in re.findall(rf"\| {re.escape(instance)} tick (\d+)$", text, re.M)]


def no_gap(numbers: list[int]) -> bool:
    return bool(numbers) and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def followed(tmp_path) -> list[int]:
    """tick.1's numbers as `ctl logs -f` printed them."""
    text = (tmp_path / "follow.log").read_text()
    return [int(n) for n in re.findall(r"\| tick\.1 tick (\d+)$", text, re.M)]


def upgraded(c, times: int) -> bool:
    return c.log("agent-1").count("upgraded in place") >= times


@pytest.mark.parametrize("isolation", ["auto", "process-group"])
def test_hup_upgrades_the_agent_without_touching_its_instances(make_cluster, tmp_path,
                                                               isolation):
    with contextlib.ExitStack() as cleanup:
        upgrades_in_place(make_cluster(agents=1, workdir=str(tmp_path),
                                       agent_env={"FORMATION_ISOLATION": isolation}),
                          tmp_path, cleanup)


def upgrades_in_place(c, tmp_path, cleanup: contextlib.ExitStack) -> None:
    c.ctl("deploy", app(tmp_path))
    c.ctl("scale", "web=2", "tick=2", "check=1")
    ids = {"web.1", "web.2", "tick.1", "tick.2", "check.1"}
    c.wait_running(ids)
    agent = c.parts["agent-1"]
    before = {i.id: (i.pid, i.restarts) for i in c.client.instances("default")}
    wait_for(lambda: len(ticks(c.log("agent-1"), "tick.1")) >= 20, 10, what="some ticks")
    with open(tmp_path / "follow.log", "w") as out:  # `ctl logs -f` goes on across upgrades
        follow = subprocess.Popen(
            [sys.executable, "-m", "ctl", "logs", "-f", "tick.1", "--tail", "0"], stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "FORMATION_SCHEDULER": c.listen, **c.tls_env()})
    cleanup.callback(follow.wait)
    cleanup.callback(follow.kill)
    wait_for(lambda: followed(tmp_path), 10, what="the follower's first line")
    first = followed(tmp_path)[0]

    for n in (1, 2):  # twice: the new image hands over as well as the old one did
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(functools.partial(upgraded, c, n), 20,
                 what=f"upgrade {n}")
        assert agent.proc.poll() is None
        c.wait_running(ids)
        assert {i.id: (i.pid, i.restarts) for i in c.client.instances("default")} == before
    assert {procs.ppid(pid) for pid, _ in before.values()} == {agent.pid}  # still its own
    # No line lost or cut across two execs: tick.1's numbers go on without a gap.
    wait_for(lambda: ticks(c.log("agent-1"), "tick.1")[-1] > 200, 20, what="more ticks")
    assert no_gap(ticks(c.log("agent-1"), "tick.1"))
    # The buffered lines came across: `ctl logs` shows ticks from before the first upgrade.
    shown = ticks(c.ctl("logs", "tick.2", "--tail", "1000").stdout.replace(" tick.2 | ", " | "),
                  "tick.2")
    assert shown[0] < 20 and no_gap(shown)
    # The follower started before the upgrades saw every line, across both.
    last = ticks(c.log("agent-1"), "tick.1")[-1]
    wait_for(lambda: followed(tmp_path)[-1:] >= [last], 10, what="the follower")
    seen = followed(tmp_path)
    assert no_gap(seen) and seen[0] == first and seen[-1] >= last, seen
    # A kill -9 of an instance still restarts it; a scale still works.
    os.kill(before["tick.1"][0], signal.SIGKILL)
    wait_for(lambda: c.running().get("tick.1") is not None and
             c.running()["tick.1"].restarts == before["tick.1"][1] + 1, 15,
             what="tick.1 restarted")
    c.ctl("scale", "tick=3")
    c.wait_running(ids | {"tick.3"})
    # Health checks go on (one under way at an exec is killed there, and reaped after it).
    checks = (tmp_path / "checks").read_text().count(".")
    wait_for(lambda: (tmp_path / "checks").read_text().count(".") >= checks + 2, 10,
             what="more health checks")
    assert not procs.zombies(agent.pid)
    assert c.scrape("agent-1")  # the metrics endpoint serves again
    # A plain stop stops the instances gracefully, as before any upgrade.
    wait_for(lambda: ticks(c.log("agent-1"), "tick.3"), 10, what="tick.3's first line")
    pids = [i.pid for i in c.running().values()]
    assert c.parts.pop("agent-1").stop() == 0
    out = c.log("agent-1")
    assert "tick.2 stopped after" in out and "tick.3 stopped after" in out
    assert not [p for p in pids if procs.alive(p)]


def test_an_upgrade_to_code_that_cannot_start_is_refused(make_cluster, tmp_path):
    """The agent runs a copy of the code; a syntax error in the copy refuses the HUP (the
    agent goes on as it was), a fixed copy is then taken up by the next HUP."""
    code = tmp_path / "code"
    for package in ("agent", "common", "proto"):
        shutil.copytree(os.path.join(ROOT, package), code / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    c = make_cluster(agents=0, spare_hosts=1, workdir=str(tmp_path))
    c.ctl("deploy", app(tmp_path))
    c.ctl("scale", "tick=1")
    c.start_agent("agent-1", cwd=str(code))  # `python -m agent` imports the copy
    tick = wait_for(lambda: c.running().get("tick.1"), 15, what="tick.1 running")
    runner = code / "agent" / "runner.py"
    good = runner.read_text()
    runner.write_text(good + "\ndef broken(:\n")
    c.parts["agent-1"].proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "not upgrading" in c.log("agent-1"), 30, what="the refusal")
    assert "invalid syntax" in c.log("agent-1")
    runner.write_text(good + '\nlog.warning("running the new code")\n')
    c.parts["agent-1"].proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "upgraded in place" in c.log("agent-1"), 30, what="the upgrade")
    assert "running the new code" in c.log("agent-1")
    assert wait_for(lambda: c.running().get("tick.1"), 15).pid == tick.pid
    # Told to stop during an upgrade, it stops as it would have, gracefully.
    agent = c.parts.pop("agent-1")
    agent.proc.send_signal(signal.SIGHUP)
    assert agent.stop() == 0
    assert "tick.1 stopped after" in c.log("agent-1") and not procs.alive(tick.pid)
