"""Logs: ctl logs merges lines from all agents in time order, filters, tails, follows and
gives JSON; a child that floods its output cannot block or grow the agent."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.cluster import procs, wait_for
from tests.cluster.harness import ROOT

TICKS = ("tick: sh -c 'i=0; while true; do i=$((i+1)); echo \"$FORMATION_INSTANCE tick $i\"; "
         "sleep 0.1; done'\n")


def test_logs_merge_filter_tail_and_json(make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text(TICKS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "tick=4")
    running = c.wait_running({"tick.1", "tick.2", "tick.3", "tick.4"})
    assert {i.agent for i in running.values()} == {"agent-1", "agent-2"}
    wait_for(lambda: c.ctl("logs", "tick.4").stdout.count("tick.4 tick") >= 12, 10)

    out = c.ctl("logs", "--tail", "40").stdout.splitlines()
    assert len(out) == 40
    pattern = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (tick\.\d) \| (tick\.\d) tick \d+$")
    stamps, prefixes = [], set()
    for line in out:
        m = pattern.match(line)
        assert m, line
        assert m.group(2) == m.group(3)  # each line carries its own instance's prefix
        stamps.append(m.group(1))
        prefixes.add(m.group(2))
    assert stamps == sorted(stamps)  # merged in time order across agents
    assert prefixes == {"tick.1", "tick.2", "tick.3", "tick.4"}
    one = c.ctl("logs", "tick.2", "--tail", "5").stdout.splitlines()
    assert len(one) == 5 and all(" tick.2 | tick.2 tick" in line for line in one)
    rows = [json.loads(line) for line in c.ctl("logs", "tick", "--tail", "3", "--json")
            .stdout.splitlines()]
    assert len(rows) == 3 and all(set(r) >= {"time", "app", "instance", "agent", "text"}
                                  for r in rows)
    bad = c.ctl("logs", "Tick", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_logs_follow_streams_new_lines(make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text(TICKS)
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "tick=2")
    c.wait_running({"tick.1", "tick.2"})
    with open(tmp_path / "follow.log", "w") as out:  # the child keeps its own copy
        follow = subprocess.Popen([sys.executable, "-m", "ctl", "logs", "-f", "--tail", "0"],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                  env={**os.environ, "FORMATION_SCHEDULER": c.listen,
                                       **c.tls_env()},
                                  start_new_session=True)
    try:
        def seen(instance: str) -> int:
            return (tmp_path / "follow.log").read_text().count(f"{instance} | {instance} tick")
        wait_for(lambda: seen("tick.1") >= 5 and seen("tick.2") >= 5, 15,
                 what="followed lines from both agents")
        assert "Traceback" not in (tmp_path / "follow.log").read_text()
    finally:
        os.killpg(follow.pid, signal.SIGINT)
        follow.wait(10)


def test_a_flooding_child_neither_blocks_nor_grows_the_agent(make_cluster, tmp_path):
    (tmp_path / "Procfile").write_text("flood: yes\n" + TICKS)
    c = make_cluster(agents=1, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "flood=2", "tick=1")
    c.wait_running({"flood.1", "flood.2", "tick.1"})
    agent = c.parts["agent-1"].pid

    def rss_mib() -> float:
        with open(f"/proc/{agent}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    wait_for(lambda: sum(v for k, v in c.scrape("agent-1").items()  # with or without labels
                         if k.split("{")[0] == "formation_agent_log_lines_dropped_total") > 0, 10,
             what="flood lines to be dropped and counted")
    start = rss_mib()
    samples = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        samples.append(rss_mib())
        time.sleep(0.25)  # sampling memory, not waiting for a condition
    print(f"agent RSS while flooding: {min(samples):.1f}-{max(samples):.1f} MiB")
    assert max(samples) < 150, samples       # bounded in absolute terms
    assert max(samples) - start < 20, samples  # and not growing
    # Other instances' logs keep flowing, both to the agent's stdout and to ctl logs.
    before = c.log("agent-1").count("tick.1 | tick.1 tick")
    wait_for(lambda: c.log("agent-1").count("tick.1 | tick.1 tick") >= before + 10, 10,
             what="tick.1's lines to keep flowing")
    assert c.ctl("logs", "tick.1", "--tail", "5").stdout.count("tick.1 tick") == 5
    assert procs.alive(c.instances()["tick.1"].pid)
    # The agent still answers promptly.
    c.ctl("scale", "flood=0", "--wait", "--timeout", "20")
