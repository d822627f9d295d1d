"""The seam between the agent and the OS: spawning instance process groups and signalling them.

Tests of the runner can pass a fake with the same three methods; the real one also tells the
guardian (agent/guardian.py) about every group, so a SIGKILLed agent leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from typing import Protocol


class Child(Protocol):
    """A spawned group leader. wait() returns its exit code as soon as the leader itself has
    exited, even while others of its group still hold its output pipe."""
    pid: int
    stdout: asyncio.StreamReader | None

    async def wait(self) -> int: ...
    def close(self) -> None: ...


class Launcher(Protocol):
    """Every process the agent starts goes through here: instances and exec health checks.
    capture=False: no output pipe (child.stdout is None)."""
    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str,
                    at_most_once: bool = False, capture: bool = True) -> Child: ...
    def kill_group(self, pgid: int, sig: int) -> None: ...
    def forget_group(self, pgid: int) -> None: ...


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


class OsLauncher:
    """Real processes: each instance is the leader of its own session and process group."""

    def __init__(self) -> None:
        self.guardian: subprocess.Popen | None = None
        self._last_tick = 0.0
        self._deadline = 0.0

    def start_guardian(self) -> None:
        self.guardian = subprocess.Popen(
            [sys.executable, "-m", "agent.guardian"], stdin=subprocess.PIPE,
            start_new_session=True, close_fds=True)

    def _tell(self, line: str) -> None:
        if self.guardian is not None and self.guardian.stdin is not None:
            try:
                self.guardian.stdin.write(line.encode() + b"\n")
                self.guardian.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def close_guardian(self) -> None:
        """Called at a clean exit, after every instance stopped."""
        if self.guardian is not None and self.guardian.stdin is not None:
            self.guardian.stdin.close()
            self.guardian.wait()

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str,
                    at_most_once: bool = False, capture: bool = True) -> Child:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _LeaderProtocol(loop), *argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if capture else subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True)
        child = OsChild(transport, protocol)
        self._tell(f"{'*' if at_most_once else '+'}{child.pid}")
        return child

    def heard_scheduler(self, guardian_deadline: float) -> None:
        """Tell the guardian the scheduler just spoke, and how long silence may last before it
        kills at_most_once groups itself."""
        now = time.monotonic()
        if now - self._last_tick >= 0.25 or guardian_deadline != self._deadline:
            self._last_tick, self._deadline = now, guardian_deadline
            self._tell(f"F{guardian_deadline:.3f}\n.")

    def kill_group(self, pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def forget_group(self, pgid: int) -> None:
        """The group is gone: the guardian must not kill a later holder of that id."""
        self._tell(f"-{pgid}")
