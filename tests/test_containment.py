"""Nothing an instance starts outlives it (agent/cgroups.py): processes that leave the group -
a background job of a shell that exits, a daemon that double-forks and calls setsid - are gone
after a scale-down, a kill -9 of the agent (its guardian) and a SIGTERM of the agent, which
stops in bounded time. And the fallback, process groups, still behaves as before. Real
processes, checked in /proc; cgroup directories checked on the cgroup2 mount."""
from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent import cgroups
from agent.cgroups import CGROUP, PROCESS_GROUP
from agent.launcher import OsLauncher
from agent.main import SHUTDOWN_SLACK, make_hello, parse_args
from tests.cluster import procs, wait_for

DAEMON = ("python3 -c \"import os,time; os.fork() and os._exit(0); os.setsid(); "
          "os.fork() and os._exit(0); time.sleep(100000)\"")
# The two lines (both leaders exit at once, leaving a process behind: a crash loop),
# and the same daemon under a leader that stays (the `;` keeps /bin/sh as the leader), so a
# running instance has an escaped descendant. Stubborn: the leader and its daemon ignore
# SIGTERM.
PROCFILE = (
    "web: sh -c \"sleep 100066 & exit 3\"\n"
    f"daemon: {DAEMON}\n"
    f"keeper: {DAEMON}; exec sleep 100067\n"
    "stubborn: python3 stubborn.py\n")  # plain words: python itself is the leader
STUBBORN = ("import os, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "time.sleep(100000)\n")
STOP_TIMEOUT = 2
TOML = "".join(f"[{t}]\nstop_timeout = {STOP_TIMEOUT}\n" for t in
               ("web", "daemon", "keeper", "stubborn"))



def _can_cgroup() -> bool:
    chosen = cgroups.choose("auto", f"probe-{os.getpid()}")
    if chosen.base:
        cgroups.remove(chosen.base)
    return chosen.mode == CGROUP


CAN_CGROUP = _can_cgroup()
needs_cgroups = pytest.mark.skipif(not CAN_CGROUP, reason="cgroup v2 not usable here")


def escaped(c, ptype: str, agent: str = "agent-1") -> list[int]:
    """Live processes of type ptype that left the session of every instance leader (the
    agent's children)."""
    pids = c.instance_pids()
    leaders = {pid for pid in pids if procs.ppid(pid) == c.parts[agent].pid}
    return [pid for pid in pids if procs.environ(pid).get("FORMATION_TYPE") == ptype
            and os.getsid(pid) not in leaders]


def sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def isolation_base(c, agent: str) -> str:
    found = re.search(r"instances contained by cgroup v2 at (\S+)", c.log(agent))
    assert found, c.log(agent)
    return found.group(1)


def deploy(c, tmp_path, **scale: int) -> None:
    (tmp_path / "Procfile").write_text(PROCFILE)
    (tmp_path / "formation.toml").write_text(TOML)
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", *(f"{t}={n}" for t, n in scale.items()))


def nothing_left(c, timeout: float, what: str) -> None:
    wait_for(lambda: not c.instance_pids(), timeout, what=what)


# ---- the pieces -------------------------------------------------------------------------------

def test_the_cgroup2_mount_and_own_cgroup_are_read_not_assumed():
    mounts = ("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
              "cgroup2 /sys/fs/cgroup/un\\040ified cgroup2 rw,relatime 0 0\n")
    assert cgroups.cgroup2_mount(mounts) == "/sys/fs/cgroup/un ified"
    assert cgroups.cgroup2_mount("proc /proc proc rw 0 0\n") is None
    assert cgroups.own_cgroup("4:memory:/x\n0::/user.slice/a.scope\n") == "/user.slice/a.scope"
    assert cgroups.own_cgroup("4:memory:/x\n") is None


def test_without_a_cgroup2_mount_the_agent_falls_back_to_process_groups_and_says_why(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    chosen = cgroups.choose("auto", "a", mounts_file=str(mounts))
    assert chosen.mode == PROCESS_GROUP and "no cgroup2 mount" in chosen.why
    assert chosen.describe().startswith("instances contained by process group: no cgroup2")
    with pytest.raises(cgroups.CgroupsUnavailable):
        cgroups.choose("cgroup", "a", mounts_file=str(mounts))
    forced = cgroups.choose("process-group", "a")
    assert forced.mode == PROCESS_GROUP and "asked for" in forced.why


def test_the_hello_says_how_instances_are_contained():
    args = parse_args(["--name", "n1", "--advertise", "10.0.0.1"])
    assert make_hello(args, cgroups.Isolation(CGROUP, base="/x")).isolation == "cgroup"
    assert make_hello(args, cgroups.Isolation(PROCESS_GROUP, why="w")).isolation == \
        "process-group"


@pytest.mark.parametrize("argv, says", [
    (["--capacity", "99999999999"], "--capacity must be a whole number from 0 to 100000"),
    (["--capacity", "-1"], "--capacity must be a whole number from 0 to 100000"),
    (["--capacity", "2.5"], "--capacity must be a whole number"),
    (["--simulate", "99999999999"], "--simulate must be a whole number from 0 to 10000"),
    (["--port-range", "1-99999"], "port range A-B within 1-65535"),
    (["--isolation", "jail"], "--isolation must be one of auto, cgroup, process-group"),
])
def test_numeric_and_other_bad_flags_exit_2_with_one_line(argv, says):
    done = subprocess.run([sys.executable, "-m", "agent", *argv], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "FORMATION_CAPACITY": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("formation-agent: error: ") and \
        says in lines[0], done.stderr


def test_a_bad_capacity_from_the_environment_is_refused_too():
    done = subprocess.run([sys.executable, "-m", "agent"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "FORMATION_CAPACITY": "1e12"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("formation-agent: error: --capacity must be a whole number "
                                   "from 0 to 100000, not '1e12'")


@pytest.fixture
def cgroup_base() -> Iterator[str]:
    """A base cgroup like an agent's, removed afterwards with whatever is left in it."""
    base = cgroups.choose("cgroup", f"t{os.getpid()}").base
    try:
        yield base
    finally:
        for entry in os.listdir(base):
            path = os.path.join(base, entry)
            if os.path.isdir(path):
                cgroups.kill(path)
                wait_for(functools.partial(cgroups.remove, path), 5, what=f"rmdir {path}")
        cgroups.remove(base)


@needs_cgroups
async def test_a_child_that_forks_and_setsids_at_once_is_inside_its_cgroup_and_killed_with_it(
        cgroup_base):
    base = cgroup_base
    launcher = OsLauncher(cgroups.Isolation(CGROUP, base=base))
    argv = ["python3", "-c", "import os,time; os.fork() and os._exit(0); os.setsid(); "
            "os.fork() and os._exit(0); time.sleep(100000)"]
    child = await launcher.spawn(argv, dict(os.environ), "/", capture=False, name="x.web.1")
    cgroup = launcher.cgroup_of(child.pid)
    try:
        assert cgroup is not None and cgroup.startswith(base + "/x.web.1-")
        assert await asyncio.wait_for(child.wait(), 10) == 0  # the leader is gone at once
        deadline = time.monotonic() + 10
        while not (daemons := [p for p in cgroups.procs(cgroup) if sid(p) not in (p, child.pid)]):
            assert time.monotonic() < deadline, "the daemon never started"
            await asyncio.sleep(0.01)  # the test's own watch, while the daemon forks
        daemon = daemons[0]  # in a session of its own, not the leader's, and in the cgroup
        assert procs.alive(daemon)
        launcher.kill_group(child.pid, signal.SIGKILL)
        assert await launcher.gone(child.pid, 5)
        assert not procs.alive(daemon)
        launcher.forget_group(child.pid)
        assert not os.path.exists(cgroup)
    finally:
        if cgroup is not None:
            cgroups.kill(cgroup)


@needs_cgroups
async def test_a_missing_program_is_still_a_spawn_error_in_cgroup_mode(cgroup_base):
    launcher = OsLauncher(cgroups.Isolation(CGROUP, base=cgroup_base))
    with pytest.raises(FileNotFoundError):
        await launcher.spawn(["no-such-program-here"], dict(os.environ), "/")
    assert not [e for e in os.listdir(cgroup_base)
                if os.path.isdir(os.path.join(cgroup_base, e))]  # no cgroup left behind


# ---- whole agents ------------------------------------------------------------------------------

@needs_cgroups
def test_scale_down_removes_every_escaped_process_and_cgroup(make_cluster, tmp_path):
    c = make_cluster(agents=1, workdir=str(tmp_path))
    deploy(c, tmp_path, web=1, daemon=1, keeper=1)
    wait_for(lambda: escaped(c, "keeper"), 20, what="keeper's setsid daemon")
    c.ctl("scale", "web=0", "daemon=0", "keeper=0")
    nothing_left(c, 15, "every instance process and escaped descendant to be gone")
    base = isolation_base(c, "agent-1")
    wait_for(lambda: not [e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e))],
             10, what=f"the instances' cgroups under {base} to be removed")
    assert not c.instances()


@needs_cgroups
def test_kill_9_of_the_agent_leaves_no_setsid_daemon(make_cluster, tmp_path):
    c = make_cluster(agents=1, workdir=str(tmp_path))
    deploy(c, tmp_path, keeper=2, web=1)
    wait_for(lambda: len(escaped(c, "keeper")) == 2, 20, what="two setsid daemons")
    c.kill_agent("agent-1")
    nothing_left(c, 10, "the guardian to kill every instance and its escaped daemon")
    base = isolation_base(c, "agent-1")
    wait_for(lambda: not os.path.exists(base), 10, what=f"the guardian to remove {base}")


@needs_cgroups
def test_a_sigtermed_agent_exits_within_stop_timeout_and_a_few_seconds_leaving_nothing(
        make_cluster, tmp_path):
    c = make_cluster(agents=1, workdir=str(tmp_path))
    deploy(c, tmp_path, stubborn=2, keeper=1, web=1)
    wait_for(lambda: len(escaped(c, "stubborn")) == 2 and escaped(c, "keeper"), 20,
             what="the escaped daemons")
    part = c.parts.pop("agent-1")
    started = time.monotonic()
    code = part.stop(signal.SIGTERM, timeout=60)
    took = time.monotonic() - started
    bound = STOP_TIMEOUT + SHUTDOWN_SLACK + 3  # generous: a shared 2-core machine
    print(f"SIGTERM -> agent exited in {took:.2f}s (stop_timeout {STOP_TIMEOUT}s, "
          f"bound {bound:.0f}s)")
    assert code == 0, c.log("agent-1")
    assert STOP_TIMEOUT - 0.5 <= took <= bound, f"took {took:.2f}s"
    nothing_left(c, 5, "every instance process and escaped daemon gone with the agent")
    assert not os.path.exists(isolation_base(c, "agent-1"))


# ---- the fallback: process groups, as before ----------------------------------------------------

def test_forced_process_groups_behave_as_before(make_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FORMATION_ISOLATION", "process-group")
    c = make_cluster(agents=1, workdir=str(tmp_path))
    assert "instances contained by process group: asked for" in c.log("agent-1")
    (tmp_path / "Procfile").write_text(
        "web: sh -c \"sleep 100066 & exit 3\"\n"
        "group: sleep 100068 & sleep 100069; true\n")
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=1", "group=2")
    wait_for(lambda: len([p for p in c.instance_pids()
                          if procs.environ(p).get("FORMATION_TYPE") == "group"]) == 6, 20,
             what="two group instances of three processes each")
    leader = c.running()["group.1"].pid
    assert len(procs.group_members(leader)) == 3  # all in the leader's group
    c.ctl("scale", "web=0", "group=1")
    wait_for(lambda: not [p for p in c.instance_pids()
                          if procs.environ(p).get("FORMATION_INSTANCE") in ("web.1", "group.2")],
             15, what="scale-down to kill the groups of web.1 and group.2")
    c.kill_agent("agent-1")
    nothing_left(c, 10, "the guardian to kill group.1's whole group")
