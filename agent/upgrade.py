"""An agent upgrade in place: on SIGHUP the agent re-executes its own program - the code now
installed - in the same process, so its instances stay its children, and hands them over.

    SIGHUP -> preflight: the installed program, run as the exec would run it (same interpreter,
              argv, cwd, environment) with FORMATION_AGENT_PREFLIGHT=1, must import, take the
              flags and the certificate, say it adopts this handover version, and exit 0; if
              not, the upgrade is refused (one log line) and the agent goes on as it was
           -> RELOADING=1 to systemd; lists from the scheduler are held, not applied (the link
              goes on: heartbeats, reports, fencing), so nothing new starts or stops
           -> settle: no spawn, stop, drain, cgroup removal or stdout write under way, and
              every leader the machines know still running (polled; at most the longest
              stop_timeout + 5 s, else the upgrade is given up and the held list applied)
           -> SIGTERM, SIGINT and SIGHUP blocked (one that comes stays pending across the
              exec), then at once, with nothing run in between: what is queued for stdout
              is written, the handover (agent/handover.py) is written to a memfd, and the
              program execs; every other fd (sockets, the link) closes
new image -> handles those signals, then unblocks them; takes the handover, adopts the
              guardian, cgroups, ports, buffered lines, fencing state and every runner (its
              machine, timers, live leader and output pipe), serves again, says READY=1 and
              dials the scheduler with every instance in its hello: no instance restarts, no
              pid changes, no output is lost.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, NoReturn

from agent import OWN_ENVIRONMENT, cgroups, handover
from agent.adopted import AdoptedGuardian
from agent.cgroups import Isolation
from agent.launcher import OsLauncher
from agent.link import SchedulerLink
from agent.logs import LogSink
from agent.supervisor import Supervisor
from common import aio, sdnotify, tls

log = logging.getLogger("agent")
PREFLIGHT_ENV = "FORMATION_AGENT_PREFLIGHT"
PREFLIGHT_TIMEOUT = 60.0  # seconds the installed program may take to import and parse
SETTLE_POLL = 0.02        # seconds between looks at whether everything is settled
HELD_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}  # across the exec


async def in_place(status: str, bound: float, stop: asyncio.Event,
                   creds: tls.Credentials | None, isolation: Isolation, launcher: OsLauncher,
                   sink: LogSink, link: SchedulerLink, supervisor: Supervisor) -> None:
    """SIGHUP: re-execute the installed agent, handing everything over. Returns only if that
    was refused or given up (status: what to tell systemd then), or the agent is told to stop
    meanwhile; at most `bound` seconds of settling."""
    check = asyncio.create_task(preflight())
    await aio.first(check, stop.wait())
    if stop.is_set():
        check.cancel()
        await asyncio.wait([check])
        return
    why = check.result()
    if why is not None:
        log.error("not upgrading: the installed agent cannot start: %s", why)
    else:
        sdnotify.reloading()
        log.info("upgrading in place: handing %d instances over", len(supervisor.runners))
        link.hold()
        if await settle(supervisor, launcher, sink, bound, stop):
            try:
                sink.flush()  # nothing is run between here and the exec
                reexec(document(vars(isolation), launcher, sink, link.handover(), supervisor))
            except (OSError, handover.HandoverError) as e:
                log.error("not upgrading: cannot re-execute %s: %s", sys.executable, e)
            finally:
                unblock()
        elif not stop.is_set():
            log.error("not upgrading: instances still starting or stopping after %.1fs", bound)
        link.release()
        if not stop.is_set():  # stopping: STOPPING=1 comes next, not READY=1
            sdnotify.ready(status)
    if creds is not None:  # what SIGHUP did before upgrades: take the certificate files anew
        creds.reload(force=True)


def adoptable(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """The handover to adopt, if this image was exec'd by an upgrade. One of another version
    (the preflight refuses those; a hand-made exec could still bring one) is not adopted: its
    guardian is told to kill those instances, which are reaped; the scheduler's list starts
    them again - never two copies, never one nobody watches."""
    if document is None or document.get("version") == handover.VERSION:
        return document
    log.error("the agent this one replaces handed over version %r, not %d: its instances are "
              "killed and started again", document.get("version"), handover.VERSION)
    try:
        state = document["launcher"]
        guardian = AdoptedGuardian(int(state["guardian_pid"]), int(state["guardian_fd"]))
    except (KeyError, TypeError, ValueError, OSError) as e:
        log.error("cannot reach its guardian (%s): exiting, which ends it", e)
        raise SystemExit(1) from None
    launcher = OsLauncher()
    launcher.guardian = guardian
    launcher.close_guardian()  # it kills what it was told of, cgroups included
    deadline = time.monotonic() + cgroups.GONE_TIMEOUT
    while time.monotonic() < deadline:  # nothing of this image's own runs yet: all theirs
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.01)  # killed, not yet exited: bounded by the deadline
        except ChildProcessError:
            break
    return None


async def preflight() -> str | None:
    """Why the installed program cannot take over (the last line it wrote, or a handover of
    another version), or None if it can."""
    env = {k: v for k, v in os.environ.items() if k not in sdnotify.PRIVATE_ENV}
    env[PREFLIGHT_ENV] = "1"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *sys.orig_argv[1:], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return f"cannot run {sys.executable}: {e}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PREFLIGHT_TIMEOUT)
    except BaseException as e:  # timed out, or the agent is stopping meanwhile
        proc.kill()
        await proc.wait()
        if isinstance(e, TimeoutError):
            return f"it did not finish within {PREFLIGHT_TIMEOUT:g}s"
        raise
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return (lines[-1] if lines else f"it exited with code {proc.returncode}")[:500]
    said = out.decode("utf-8", "replace").split()
    if said != ["handover", str(handover.VERSION)]:
        return (f"it takes a handover of version {' '.join(said[1:2]) or '(none)'}, this one "
                f"writes version {handover.VERSION}: restart the agent instead (which stops "
                "its instances)")
    return None


async def settle(supervisor: Supervisor, launcher: OsLauncher, sink: LogSink, bound: float,
                 stop: asyncio.Event) -> bool:
    """Wait until everything can be handed over, at most `bound` seconds; False at once when
    the agent is told to stop meanwhile. True with SIGTERM, SIGINT and SIGHUP blocked: one
    that comes from now on stays pending across the exec, for the new image (a blocked
    signal stays blocked, and pending, across execve); unblock() if the exec fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound

    def ready() -> bool:
        return supervisor.settled() and launcher.idle() and sink.idle()

    while not stop.is_set():
        if ready():
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
            # One that came just before the block is being handled now: let it be.
            await asyncio.sleep(SETTLE_POLL)
            if not stop.is_set() and ready():
                return True
            unblock()
        elif loop.time() >= deadline:
            return False
        else:
            await asyncio.sleep(SETTLE_POLL)
    return False


def unblock() -> None:
    """Deliver the signals settle() held (the new image calls this once it handles them)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def document(isolation: dict[str, str], launcher: OsLauncher, sink: LogSink,
             link_state: dict[str, float], supervisor: Supervisor) -> dict[str, Any]:
    return {"version": handover.VERSION, "isolation": isolation,
            "launcher": launcher.handover(), "sink": sink.handover(), "link": link_state,
            "runners": supervisor.handover()}


def reexec(state: dict[str, Any]) -> NoReturn:
    """Exec the installed program with the handover; OSError if the exec fails, HandoverError
    if the handover is too long (the agent then goes on as it was)."""
    fd = handover.write(state)
    env = {k: v for k, v in os.environ.items() if k not in OWN_ENVIRONMENT}
    env[handover.HANDOVER_ENV] = str(fd)
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        os.close(fd)
        raise
