"""The guardian: a tiny process that kills the agent's instances if the agent dies.

The agent starts it with a pipe on stdin and writes `+PGID` when it starts an instance and
`-PGID` once the instance's group is gone. When the pipe closes - the agent exited or was
SIGKILLed - the guardian sends SIGKILL to every group still listed, so no instance (nor any
child of one) outlives its agent. It runs in its own session so signals meant for the agent's
group do not reach it.
"""
from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip()
        if text[:1] == b"+" and text[1:].isdigit():
            groups.add(int(text[1:]))
        elif text[:1] == b"-" and text[1:].isdigit():
            groups.discard(int(text[1:]))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    main()
