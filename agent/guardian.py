"""The guardian: a tiny process that kills the agent's instances if the agent dies or hangs.

The agent starts it with a pipe on stdin and writes one line per event:

    +PGID   an instance's group started          *PGID  the same, for an at_most_once type
    -PGID   the group is gone                    F SECONDS  how long the agent may go without
    .       the agent just heard the scheduler              word before *groups are killed

When the pipe closes - the agent exited or was SIGKILLed - the guardian SIGKILLs every group
still listed, so no instance (nor any child of one) outlives its agent. And when no `.` came for
F seconds while at_most_once groups run - the agent is frozen, or cut off and could not fence
them itself - it SIGKILLs those, before the scheduler may start them elsewhere. It runs in its
own session so signals meant for the agent's group do not reach it.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import time


def kill(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    once: set[int] = set()
    fence_after = 0.0
    last_word = time.monotonic()
    fd, pending = 0, b""
    while True:
        timeout = None
        if once and fence_after > 0:
            timeout = max(0.0, last_word + fence_after - time.monotonic())
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            kill(once)
            groups -= once
            once.clear()
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for text in lines:
            op, arg = text[:1], text[1:].strip()
            if op == b".":
                last_word = time.monotonic()
            elif op == b"F":
                fence_after = float(arg)
            elif arg.isdigit() and op in (b"+", b"*"):
                groups.add(int(arg))
                if op == b"*":
                    once.add(int(arg))
            elif arg.isdigit() and op == b"-":
                groups.discard(int(arg))
                once.discard(int(arg))
    kill(groups)


if __name__ == "__main__":
    main()
