"""Processes an agent upgrade hands across its exec (agent/handover.py): still children of this
process - exec keeps them - but not spawned by this image, so asyncio knows nothing of them.

Each is watched through a pidfd, which turns readable once the process has exited; only then is
it reaped (waitpid WNOHANG), so its pid cannot be reused while we hold it. An instance's output
pipe is the same pipe, read on: what the old image had read but not yet cut into lines is fed
back first.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import time
from typing import BinaryIO

UNKNOWN = 255  # the exit code asyncio gives a child whose status it could not learn


def _reap(pid: int) -> int | None:
    """The exit code asyncio would give (negative: a signal), or None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already (not ours after all): nothing more to learn
        return UNKNOWN
    return os.waitstatus_to_exitcode(status) if done else None


def running(pid: int) -> bool:
    """Is our child pid still running? False once it exited, reaped or not (WNOWAIT: the
    status stays for whoever waits for it)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


class AdoptedChild:
    """An instance's group leader from before the exec (agent/launcher.py's Child)."""

    def __init__(self, pid: int, stdout_fd: int, unread: bytes) -> None:
        """stdout_fd -1: its pipe had reached its end; `unread` is then the last of it."""
        self.pid = pid
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self.stdout: asyncio.StreamReader | None = None
        self._pipe: BinaryIO | None = None
        self._transport: asyncio.ReadTransport | None = None
        if stdout_fd >= 0 or unread:
            self.stdout = asyncio.StreamReader(limit=2 ** 16)
            if unread:
                self.stdout.feed_data(unread)
        if stdout_fd >= 0:
            os.set_inheritable(stdout_fd, False)  # not into the next instances spawned
            self._pipe = os.fdopen(stdout_fd, "rb", buffering=0)  # closed with it from now on
        elif self.stdout is not None:
            self.stdout.feed_eof()
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            self.close()
            raise
        loop.add_reader(self._pidfd, self._check)
        self._check()  # it may have exited during the exec

    async def attach(self) -> None:
        """Start reading the pipe again (an event loop's read transport over it)."""
        reader, pipe = self.stdout, self._pipe
        if reader is not None and pipe is not None:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe)

    def _check(self) -> None:
        if self._exited.done():
            return
        code = _reap(self.pid)
        if code is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def stdout_fd(self) -> int:
        return self._pipe.fileno() if self._pipe is not None and not self._pipe.closed else -1

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        elif self._pipe is not None:
            self._pipe.close()


class AdoptedGuardian:
    """The guardian (agent/guardian.py) from before the exec, as much of subprocess.Popen as
    the launcher uses: stdin, pid, wait(timeout), kill()."""

    def __init__(self, pid: int, stdin_fd: int) -> None:
        self.pid = pid
        os.set_inheritable(stdin_fd, False)
        self.stdin: BinaryIO | None = os.fdopen(stdin_fd, "wb")
        self._pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            poller = select.poll()  # not select(): the fd may be above 1023
            poller.register(self._pidfd, select.POLLIN)
            if poller.poll(None if left is None else left * 1000):
                self.returncode = _reap(self.pid)
            elif deadline is not None:
                raise subprocess.TimeoutExpired("guardian", timeout or 0.0)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        return self.returncode

    def kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
