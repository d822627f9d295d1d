"""The seam between the agent and the OS: spawning instances, signalling them, knowing they
are gone.

Each instance leads its own session and process group and, where the agent may (agent/
cgroups.py), lives in a cgroup of its own, so that whatever it starts - even a daemon that
left the group with setsid - is signalled and killed with it. Tests of the runner can pass a
fake with the same methods; the real one also tells the guardian (agent/guardian.py) about
every group and cgroup, so a SIGKILLed agent leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Protocol

from agent import cgroups
from agent.adopted import AdoptedChild, AdoptedGuardian
from agent.cgroups import Isolation

log = logging.getLogger("agent")


class Child(Protocol):
    """A spawned group leader. wait() returns its exit code as soon as the leader itself has
    exited, even while others of its group still hold its output pipe."""
    pid: int
    stdout: asyncio.StreamReader | None

    async def wait(self) -> int: ...
    def close(self) -> None: ...
    def stdout_fd(self) -> int: ...  # the output pipe's fd, -1 if none (for a handover)


class Launcher(Protocol):
    """Every process the agent starts goes through here: instances and exec health checks.
    capture=False: no output pipe (child.stdout is None). name: what the instance is called
    (its cgroup's name)."""
    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str,
                    at_most_once: bool = False, capture: bool = True,
                    name: str = "") -> Child: ...
    def kill_group(self, pgid: int, sig: int) -> None: ...
    async def gone(self, pgid: int, timeout: float) -> bool: ...
    def forget_group(self, pgid: int) -> None: ...
    def cgroup_of(self, pgid: int) -> str | None: ...


COMPOUND = (";", "&", "|", "\n", "`", "$(", "(", ")", "{", "}")
PLAIN = re.compile(r"[A-Za-z0-9_./:,+@%-]+(?:[ \t]+[A-Za-z0-9_./:=,+@%-]+)*")


def shell_argv(command: str) -> list[str]:
    """How to run a Procfile command, as foreman would through /bin/sh, but without a shell
    between the agent and the process:
    - plain words (no quotes, variables, globs or redirections): exec'd directly, no shell;
    - otherwise `/bin/sh -c "exec COMMAND"`, the shell replacing itself;
    - compound commands (`a && b`, pipes, subshells) or a leading `VAR=value`: `/bin/sh -c
      COMMAND`, since a leading exec would change what they mean."""
    command = command.strip()
    if PLAIN.fullmatch(command):
        return command.split()
    words = command.split()
    simple = not any(op in command for op in COMPOUND) and bool(words) and "=" not in words[0]
    return ["/bin/sh", "-c", f"exec {command}" if simple else command]


class _LeaderProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Learns of the leader's exit from the child watcher. asyncio's Process.wait() also waits
    for the pipes to close, which a grandchild holding stdout can postpone forever."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        super().connection_made(transport)

    def process_exited(self) -> None:
        assert self.transport is not None
        code = self.transport.get_returncode()
        assert code is not None  # the watcher has reaped it
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(code)


class OsChild:
    """A real group leader (see Child)."""

    def __init__(self, transport: asyncio.SubprocessTransport,
                 protocol: _LeaderProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid: int = transport.get_pid()
        self.stdout = protocol.stdout

    async def wait(self) -> int:
        return await asyncio.shield(self._protocol.exited)

    def close(self) -> None:
        """Release the pipes, even if an escaped grandchild still holds the other end."""
        self._transport.close()

    def stdout_fd(self) -> int:
        pipe = self._transport.get_pipe_transport(1)
        if pipe is None or pipe.is_closing():
            return -1
        file = pipe.get_extra_info("pipe")
        return file.fileno() if file is not None else -1


def _findable(program: str, env: dict[str, str], cwd: str) -> bool:
    """Would exec find program (as the child's PATH and cwd resolve it)?"""
    if "/" in program:
        path = os.path.join(cwd, program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


class OsLauncher:
    """Real processes: each instance is the leader of its own session and process group, and
    in cgroup mode the only member of a fresh cgroup until it forks."""

    def __init__(self, isolation: Isolation | None = None) -> None:
        self.isolation = isolation or Isolation(cgroups.PROCESS_GROUP, why="not asked")
        self.guardian: subprocess.Popen | AdoptedGuardian | None = None
        self._last_tick = 0.0
        self._deadline = 0.0
        self._cgroups: dict[int, str] = {}   # leader pid -> its cgroup, until forgotten
        self._spawned = 0
        self._cleanups: set[asyncio.Task] = set()
        self._checks: set[int] = set()  # exec health checks' groups, until forgotten
        self._starting = 0  # spawns under way

    def start_guardian(self) -> None:
        self.guardian = subprocess.Popen(
            [sys.executable, "-m", "agent.guardian"], stdin=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        if self.isolation.base:
            self._tell(f"B{self.isolation.base}")

    def handover(self) -> dict[str, Any]:
        """What an upgrade's exec hands over (agent/handover.py). The guardian's stdin stays
        open across it, so the guardian sees no EOF and kills nothing. A health check under way
        is killed (the next one is due at once after the exec); the new image reaps it."""
        assert self.guardian is not None and self.guardian.stdin is not None
        for pid in self._checks:
            self.kill_group(pid, signal.SIGKILL)
        self.guardian.stdin.flush()
        os.set_inheritable(self.guardian.stdin.fileno(), True)
        return {"guardian_pid": self.guardian.pid, "guardian_fd": self.guardian.stdin.fileno(),
                "cgroups": {str(pid): path for pid, path in self._cgroups.items()},
                "spawned": self._spawned, "reap": sorted(self._checks)}

    def adopt(self, state: dict[str, Any]) -> None:
        """Take over the guardian and the cgroups of the image before the exec, and reap the
        health checks it killed."""
        self.guardian = AdoptedGuardian(int(state["guardian_pid"]), int(state["guardian_fd"]))
        self._cgroups = {int(pid): str(path) for pid, path in state["cgroups"].items()}
        self._spawned = int(state["spawned"])
        for pid in state.get("reap", []):
            task = asyncio.get_running_loop().create_task(self._reap(int(pid)))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _reap(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            await AdoptedChild(pid, -1, b"").wait()
        self.forget_group(pid)

    def idle(self) -> bool:
        """No spawn under way (an exec check's too), no cgroup of a dead group still waited
        for (see forget_group): nothing an upgrade's handover would miss."""
        return not self._starting and not self._cleanups

    def _tell(self, line: str) -> None:
        if self.guardian is not None and self.guardian.stdin is not None:
            try:
                self.guardian.stdin.write(line.encode() + b"\n")
                self.guardian.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def close_guardian(self, timeout: float = 10.0) -> None:
        """Called at exit, once the instances stopped (or were given up on): the guardian
        kills whatever is still listed, removes the cgroups and exits."""
        if self.guardian is not None and self.guardian.stdin is not None:
            with contextlib.suppress(OSError):
                self.guardian.stdin.close()
            try:
                self.guardian.wait(timeout)
            except subprocess.TimeoutExpired:
                self.guardian.kill()
                self.guardian.wait()
        if self.isolation.base:
            cgroups.remove(self.isolation.base)

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str,
                    at_most_once: bool = False, capture: bool = True,
                    name: str = "") -> Child:
        self._starting += 1  # until its pid is known (and told to the guardian)
        try:
            return await self._spawn(argv, env, cwd, at_most_once, capture, name)
        finally:
            self._starting -= 1

    async def _spawn(self, argv: list[str], env: dict[str, str], cwd: str, at_most_once: bool,
                     capture: bool, name: str) -> Child:
        cgroup = ""
        if self.isolation.base:
            # The wrapper would turn a missing program into exit 127; say it as before.
            if not _findable(argv[0], env, cwd):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
            self._spawned += 1
            cgroup = os.path.join(self.isolation.base, f"{name or 'process'}-{self._spawned}")
            os.mkdir(cgroup)
            argv = ["/bin/sh", "-c", cgroups.ENTER, os.path.join(cgroup, "cgroup.procs"), *argv]
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _LeaderProtocol(loop), *argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if capture else subprocess.DEVNULL, env=env, cwd=cwd,
                start_new_session=True)
        except BaseException:
            if cgroup:
                cgroups.remove(cgroup)
            raise
        child = OsChild(transport, protocol)
        if cgroup:
            self._cgroups[child.pid] = cgroup
        if not capture:
            self._checks.add(child.pid)
        self._tell(f"{'*' if at_most_once else '+'}{child.pid}{' ' + cgroup if cgroup else ''}")
        return child

    def heard_scheduler(self, guardian_deadline: float) -> None:
        """Tell the guardian the scheduler just spoke, and how long silence may last before it
        kills at_most_once groups itself."""
        now = time.monotonic()
        if now - self._last_tick >= 0.25 or guardian_deadline != self._deadline:
            self._last_tick, self._deadline = now, guardian_deadline
            self._tell(f"F{guardian_deadline:.3f}\n.")

    def kill_group(self, pgid: int, sig: int) -> None:
        """Signal the group and, in cgroup mode, every process of its cgroup (SIGKILL: all of
        them at once through cgroup.kill)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        cgroup = self._cgroups.get(pgid)
        if cgroup:
            if sig == signal.SIGKILL:
                cgroups.kill(cgroup)
            else:
                cgroups.signal_all(cgroup, sig)

    def cgroup_of(self, pgid: int) -> str | None:
        return self._cgroups.get(pgid)

    async def gone(self, pgid: int, timeout: float) -> bool:
        """Wait until nothing of the group's cgroup lives (True), at most timeout seconds. In
        process-group mode there is nothing to watch: True at once."""
        cgroup = self._cgroups.get(pgid)
        return cgroup is None or await cgroups.wait_empty(cgroup, timeout)

    def forget_group(self, pgid: int) -> None:
        """The group is dead: kill what is left of its cgroup, remove the cgroup once empty,
        and only then tell the guardian, which must not kill a later holder of that id."""
        self._checks.discard(pgid)
        cgroup = self._cgroups.pop(pgid, None)
        if cgroup is None:
            self._tell(f"-{pgid}")
            return
        cgroups.kill(cgroup)
        if cgroups.remove(cgroup):
            self._tell(f"-{pgid}")
            return
        task = asyncio.get_running_loop().create_task(self._remove_later(pgid, cgroup))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _remove_later(self, pgid: int, cgroup: str) -> None:
        if await cgroups.wait_empty(cgroup, cgroups.GONE_TIMEOUT) and cgroups.remove(cgroup):
            self._tell(f"-{pgid}")
        else:  # the guardian, still told of it, kills it again when the agent exits
            log.warning("%s still has processes %s %.0fs after SIGKILL", cgroup,
                        cgroups.procs(cgroup), cgroups.GONE_TIMEOUT)
