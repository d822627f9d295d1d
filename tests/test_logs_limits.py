"""Logs under pressure (issue "Hardening", item 6, and --tail's bound): followers that do not
read cost a bounded number of bytes and are told what they missed; an instance's output is
budgeted in bytes; control characters are escaped in `ctl logs` and on the agent's stdout,
raw in `ctl logs --json`."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import grpc
import pytest

from agent import api as agent_api
from agent import logs as agent_logs
from agent.logs import BYTE_BURST, BYTE_RATE, LogSink
from agent.pump import pump
from common.escape import escape
from ctl import logs as ctl_logs
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler import logs as scheduler_logs
from tests.cluster import wait_for

# An instance that prints 16 KiB lines as fast as its pipe takes them, numbered.
BIG = ("import itertools, sys\n"
       "w = sys.stdout.buffer.write\n"
       "for n in itertools.count():\n"
       "    w(b'%08d ' % n + b'x' * 16374 + b'\\n')\n")
# An instance whose lines hold ANSI colours, an OSC 52 clipboard write, CR, backspace, tab.
NASTY = "esc \x1b[31mred\x1b[0m \x1b]52;c;aGk=\x07 a\rb\x08c\x9b\x7f\tend"
ESC = ("import sys, time\n"
       "for i in range(10000):\n"
       f"    sys.stdout.write({NASTY!r} + '\\n')\n"
       "    sys.stdout.flush()\n"
       "    time.sleep(0.1)\n")
ESCAPED = r"esc \x1b[31mred\x1b[0m \x1b]52;c;aGk=\x07 a\x0db\x08c\x9b\x7f" + "\tend"

MIB = 1 << 20
RSS_BOUND_MIB = 100  # each daemon's resident memory while 3+3 followers read nothing


# ---- in-process ------------------------------------------------------------------------------

def test_escape_shows_every_control_but_tab():
    assert escape(NASTY) == ESCAPED
    assert escape("plain ünïcode\ttab") == "plain ünïcode\ttab"
    for c in [*range(0x20), 0x7f, *range(0x80, 0xa0)]:
        if c != 0x09:
            assert escape(chr(c)) == f"\\x{c:02x}"


def test_the_tail_bound_is_the_same_everywhere():
    assert ctl_logs.MAX_TAIL == scheduler_logs.MAX_TAIL == agent_api.MAX_TAIL == 100_000


async def test_a_full_follower_drops_and_the_next_line_says_how_many():
    sink = LogSink(out=open(os.devnull, "wb"))  # noqa: SIM115 - closed by the process
    follower = sink.follow(lambda e: True, lines=3, nbytes=1 << 20)
    for i in range(10):
        sink.line("a", "web.1", f"line {i}")
    got = [await follower.get() for _ in range(3)]
    assert [(m, e.text) for m, e in got] == [(0, "line 0"), (0, "line 1"), (0, "line 2")]
    assert follower.take() is None
    sink.line("a", "web.1", "line 10")
    missed, e = await follower.get()
    assert (missed, e.text) == (7, "line 10")
    assert sink.dropped_lines[agent_logs.FOLLOWER] == 7
    # Bounded in bytes too: 16 KiB lines into a 64 KiB queue.
    small = sink.follow(lambda e: True, lines=1000, nbytes=64 * 1024)
    for _ in range(100):
        sink.line("a", "web.1", "x" * 16384)
    assert len(small.items) == 3 and small.missed == 97


async def test_the_scheduler_adds_its_own_drops_to_the_agents():
    follower = scheduler_logs.Follower(lines=2)
    assert follower.put(pb.LogLine(text="a"))
    assert follower.put(pb.LogLine(text="b", missed=5))
    assert not follower.put(pb.LogLine(text="c", missed=3))  # 1 + the agent's 3
    assert [(await follower.get()).missed for _ in range(2)] == [0, 5]
    assert follower.put(pb.LogLine(text="d", missed=2))
    assert (await follower.get()).missed == 4 + 2


async def test_an_instance_is_budgeted_in_bytes():
    reader = asyncio.StreamReader()
    line = b"y" * 1023 + b"\n"
    reader.feed_data(line * 1024)  # 1 MiB at once
    reader.feed_eof()
    sink = LogSink(out=open(os.devnull, "wb"))  # noqa: SIM115
    await pump(reader, "a", "big.1", sink, byte_rate=1024.0, byte_burst=64 * 1024.0)
    kept = len(sink.buffers[("a", "big.1")].lines)
    assert 64 <= kept <= 70, kept  # the burst, and what trickled in meanwhile
    assert sink.dropped_lines[agent_logs.RATE] == 1024 - kept
    assert sink.dropped_bytes[agent_logs.RATE] >= (1024 - kept - 64) * 1024


# ---- real processes ------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def dropped(c, part: str, name: str) -> float:
    return sum(v for k, v in c.scrape(part).items() if k.split("{")[0] == name)


def first_missed(stream, deadline: float) -> pb.LogLine:
    """Read a follow stream until a line says lines were missed before it."""
    for n, line in enumerate(stream):
        if line.missed > 0:
            print(f"a line after {n} said {line.missed} were missed")
            return line
        assert n < 100_000 and time.monotonic() < deadline, "no line with `missed` > 0"
    raise AssertionError("the stream ended")


def test_followers_that_do_not_read_cost_bounded_memory_and_learn_what_they_missed(
        make_cluster, tmp_path):
    (tmp_path / "big.py").write_text(BIG)
    (tmp_path / "Procfile").write_text(f"big: {sys.executable} big.py\n")
    c = make_cluster(agents=1, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    scheduler, agent = c.parts["scheduler"].pid, c.parts["agent-1"].pid
    before = {p: rss_mib(p) for p in (scheduler, agent)}
    # No BDP probing: else grpc may grow the window of a stream that nobody reads to tens of
    # MB on loopback, and lines pile up in this process instead of queueing in the daemons.
    options = [("grpc.http2.bdp_probe", 0)]
    channels = [c.channel(options=options),
                c.channel("agent-1", role="scheduler", name="scheduler", options=options)]
    request = pb.LogsRequest(app="default", selector="big", follow=True)
    # Three followers of each daemon that read nothing (the calls start at once).
    streams = [pbg.ControlStub(channels[0]).Logs(request) for _ in range(3)]
    streams += [pbg.AgentApiStub(channels[1]).Logs(request) for _ in range(3)]
    try:
        c.ctl("scale", "big=2")
        c.wait_running({"big.1", "big.2"})
        # Stdout: past the instances' bursts, their bytes per second are what their budget says.
        agent_log = os.path.join(c.tmp, "agent-1.log")
        wait_for(lambda: os.path.getsize(agent_log) > 2 * BYTE_BURST, 15,
                 what="the bursts to be written")
        start, t0 = os.path.getsize(agent_log), time.monotonic()
        samples: dict[int, list[float]] = {scheduler: [], agent: []}
        window = 4.0
        while time.monotonic() - t0 < window:
            for pid, seen in samples.items():
                seen.append(rss_mib(pid))
                assert seen[-1] < RSS_BOUND_MIB, (pid, seen)  # fail fast (before: GBs)
            time.sleep(0.2)  # sampling memory, not waiting for a condition
        rate = (os.path.getsize(agent_log) - start) / (time.monotonic() - t0)
        print(f"RSS before {before}, while not reading {samples}; stdout {rate / MIB:.2f} MiB/s")
        assert 0.25 * 2 * BYTE_RATE < rate < 1.25 * 2 * BYTE_RATE + MIB / window, rate
        # Reading again: after what was queued, a line says how many were missed.
        deadline = time.monotonic() + 15
        for stream in (streams[0], streams[3]):
            line = first_missed(stream, deadline)
            assert line.instance.startswith("big.") and line.text.endswith("x")
        assert dropped(c, "scheduler", "formation_log_follower_lines_dropped_total") > 0
        assert dropped(c, "agent-1", "formation_agent_log_lines_dropped_total") > 0
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


def test_control_characters_are_escaped_in_ctl_logs_and_the_agents_output(
        make_cluster, tmp_path):
    (tmp_path / "esc.py").write_text(ESC)
    (tmp_path / "Procfile").write_text(f"esc: {sys.executable} esc.py\n")
    c = make_cluster(agents=1, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "esc=1")
    c.wait_running({"esc.1"})
    def two_rows() -> list[dict] | None:
        r = [json.loads(line) for line in c.ctl(
            "logs", "esc", "--tail", "2", "--json").stdout.splitlines()]
        return r if len(r) == 2 else None
    rows = wait_for(two_rows, 10, what="two lines of esc.1")
    assert rows is not None
    assert [r["text"] for r in rows] == [NASTY, NASTY]  # --json: raw
    out = c.ctl("logs", "esc", "--tail", "2").stdout
    assert out.count(f" esc.1 | {ESCAPED}\n") == 2, out
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out
    agent_out = c.log("agent-1")
    assert f" esc.1 | {ESCAPED}\n" in agent_out
    assert "\x1b" not in agent_out and "\r" not in agent_out
    assert [r["missed"] for r in rows] == [0, 0]


def test_tail_is_bounded(make_cluster):
    c = make_cluster(agents=1)
    for tail in ("99999999999", "100001", "-1"):
        bad = c.ctl("logs", "--tail", tail, check=False)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad
        assert "Traceback" not in bad.stderr and "100000" in bad.stderr
    assert c.ctl("logs", "--tail", "100000").returncode == 0
    with c.channel("agent-1", role="scheduler", name="scheduler") as channel:
        with pytest.raises(grpc.RpcError) as e:
            list(pbg.AgentApiStub(channel).Logs(pb.LogsRequest(tail=100_001), timeout=5))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_scheduler_refuses_a_larger_tail(make_cluster):
    c = make_cluster(agents=1)
    with c.channel() as channel:
        with pytest.raises(grpc.RpcError) as e:
            list(pbg.ControlStub(channel).Logs(pb.LogsRequest(tail=100_001), timeout=5))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
