"""An agent upgrade in place: on SIGHUP the agent re-executes its own program - the code now
installed - in the same process, so its instances stay its children, and hands them over.

    SIGHUP -> preflight: the installed program, run as the exec would run it (same interpreter,
              argv, cwd, environment) with FORMATION_AGENT_PREFLIGHT=1, must import and take
              the flags, then exit 0; if not, the upgrade is refused (one log line) and the
              agent goes on as it was
           -> RELOADING=1 to systemd; the scheduler link and the gRPC server stop (no new
              list can start or stop anything; the scheduler sees the link end)
           -> settle: no spawn, stop, drain, cgroup removal or stdout write under way
              (polled; at most the longest stop_timeout + SHUTDOWN_SLACK, else the upgrade is
              abandoned and everything resumes)
           -> at once, with nothing run in between: what is queued for stdout is written, the
              handover (agent/handover.py) is written to a memfd, and the program execs
new image -> takes the handover, adopts the guardian, cgroups, ports, buffered lines, fencing
              state and every runner (its machine, timers, live leader and output pipe),
              serves again, says READY=1 and dials the scheduler with every instance in its
              hello: no instance restarts, no pid changes, no output is lost.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from typing import Any, NoReturn

from agent import OWN_ENVIRONMENT, handover
from agent.launcher import OsLauncher
from agent.logs import LogSink
from agent.supervisor import Supervisor
from common import sdnotify

log = logging.getLogger("agent")
PREFLIGHT_ENV = "FORMATION_AGENT_PREFLIGHT"
PREFLIGHT_TIMEOUT = 60.0  # seconds the installed program may take to import and parse
SETTLE_POLL = 0.02        # seconds between looks at whether everything is settled


async def preflight() -> str | None:
    """Why the installed program cannot take over (the last line it wrote), or None if it can."""
    env = {k: v for k, v in os.environ.items() if k not in sdnotify.PRIVATE_ENV}
    env[PREFLIGHT_ENV] = "1"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *sys.orig_argv[1:], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return f"cannot run {sys.executable}: {e}"
    try:
        _, err = await asyncio.wait_for(proc.communicate(), PREFLIGHT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"it did not finish within {PREFLIGHT_TIMEOUT:g}s"
    if proc.returncode == 0:
        return None
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return (lines[-1] if lines else f"it exited with code {proc.returncode}")[:500]


async def settle(supervisor: Supervisor, launcher: OsLauncher, sink: LogSink, bound: float,
                 stop: asyncio.Event) -> bool:
    """Wait until everything can be handed over (True), at most `bound` seconds; False at once
    when the agent is told to stop meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not stop.is_set():
        if supervisor.settled() and launcher.idle() and sink.idle():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(SETTLE_POLL)
    return False


def document(isolation: dict[str, str], launcher: OsLauncher, sink: LogSink,
             link_state: dict[str, float], supervisor: Supervisor) -> dict[str, Any]:
    return {"version": handover.VERSION, "isolation": isolation,
            "launcher": launcher.handover(), "sink": sink.handover(), "link": link_state,
            "runners": supervisor.handover()}


def reexec(state: dict[str, Any]) -> NoReturn:
    """Exec the installed program with the handover; OSError if the exec fails (the agent
    then goes on as it was)."""
    fd = handover.write(state)
    env = {k: v for k, v in os.environ.items() if k not in OWN_ENVIRONMENT}
    env[handover.HANDOVER_ENV] = str(fd)
    # A SIGHUP between the exec and the new image's handler would end the agent: ignored
    # until then (an ignored signal stays ignored across exec).
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        signal.signal(signal.SIGHUP, previous)
        os.close(fd)
        raise
