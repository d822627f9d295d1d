"""The seam between the agent and the OS: spawning instance process groups and signalling them.

Tests of the runner can pass a fake with the same two methods; the real one also tells the
guardian (agent/guardian.py) about every group, so a SIGKILLed agent leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Protocol


class Child(Protocol):
    pid: int
    stdout: asyncio.StreamReader | None

    async def wait(self) -> int: ...


class Launcher(Protocol):
    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> Child: ...
    def kill_group(self, pgid: int, sig: int) -> None: ...
    def forget_group(self, pgid: int) -> None: ...


COMPOUND = (";", "&", "|", "\n", "`", "$(", "(", ")", "{", "}")


def shell_argv(command: str) -> list[str]:
    """Run a Procfile command through /bin/sh like foreman, with `exec` so the shell does not
    stay between the agent and the process - unless the command is compound (`a && b`, a pipe,
    a subshell) or starts with `VAR=value`, where a leading exec would change what it means."""
    words = command.split()
    simple = not any(op in command for op in COMPOUND) and bool(words) and "=" not in words[0]
    return ["/bin/sh", "-c", f"exec {command}" if simple else command]


class OsLauncher:
    """Real processes: each instance is the leader of its own session and process group."""

    def __init__(self) -> None:
        self.guardian: subprocess.Popen | None = None

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

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        self._tell(f"+{proc.pid}")
        return proc

    def kill_group(self, pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def forget_group(self, pgid: int) -> None:
        """The group is gone: the guardian must not kill a later holder of that id."""
        self._tell(f"-{pgid}")
