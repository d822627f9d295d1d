"""The guardian: a tiny process that kills the agent's instances if the agent dies or hangs.

The agent starts it with a pipe on stdin and writes one line per event:

    +PGID [CGROUP]  an instance's group (and cgroup) started   *PGID [CGROUP]  the same, for
    -PGID           the group is gone (its cgroup removed)                     an at_most_once type
    B DIR           the directory of the agent's cgroups        F SECONDS  how long the agent may
    .               the agent just heard the scheduler                     go without word before
                                                                           *groups are killed

When the pipe closes - the agent exited or was SIGKILLed - the guardian SIGKILLs every group
still listed and every process of its cgroup (`cgroup.kill`: daemons that left the group with
setsid too), and of any other cgroup in the agent's directory (one made for an instance the
agent was starting when it died, not yet told of), removes the emptied cgroups and the
directory, so no instance (nor anything it started) outlives its agent. And when no `.` came for F seconds while
at_most_once groups run - the agent is frozen, or cut off and could not fence them itself - it
SIGKILLs those, before the scheduler may start them elsewhere. It runs in its own session so
signals meant for the agent's group do not reach it.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import time

EMPTY_WAIT = 3.0  # seconds for killed cgroups to empty before the guardian exits anyway


def kill(groups: dict[int, str]) -> None:
    """SIGKILL each group (a pgid < 1 stands for none known) and every process of its
    cgroup."""
    for pgid, cgroup in groups.items():
        if pgid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if cgroup:
            with contextlib.suppress(OSError), open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
                f.write("1")


def untold(base: str, groups: dict[int, str]) -> list[str]:
    """The cgroups under base the agent made but had not told of yet: it was killed between
    making one (and starting its instance) and the `+` line."""
    known = set(groups.values())
    with contextlib.suppress(OSError):
        return [e.path for e in os.scandir(base) if e.is_dir() and e.path not in known]
    return []


def remove(cgroups: list[str]) -> None:
    """rmdir each (killed) cgroup once it is empty, waiting EMPTY_WAIT at most in all; one
    still busy is killed again (a process that entered it since: an instance just started)."""
    deadline = time.monotonic() + EMPTY_WAIT
    left = list(cgroups)
    while left:
        for path in list(left):
            try:
                os.rmdir(path)
                left.remove(path)
            except FileNotFoundError:
                left.remove(path)
            except OSError:  # EBUSY: its killed processes are still exiting, or a new one
                with contextlib.suppress(OSError), \
                        open(os.path.join(path, "cgroup.kill"), "w") as f:
                    f.write("1")
        if not left or time.monotonic() >= deadline:
            return
        time.sleep(0.01)  # a process of its own with nothing else to do; bounded above


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: dict[int, str] = {}  # pgid -> its cgroup ("" when none)
    once: set[int] = set()
    base = ""
    fence_after = 0.0
    last_word = time.monotonic()
    fd, pending = 0, b""
    while True:
        timeout = None
        if once and fence_after > 0:
            timeout = max(0.0, last_word + fence_after - time.monotonic())
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            fenced = {pgid: groups.pop(pgid, "") for pgid in once}
            kill(fenced)
            once.clear()
            remove([c for c in fenced.values() if c])
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for text in lines:
            op, arg = text[:1], text[1:].strip()
            pgid, _, cgroup = arg.partition(b" ")
            if op == b".":
                last_word = time.monotonic()
            elif op == b"F":
                fence_after = float(arg)
            elif op == b"B":
                base = os.fsdecode(arg)
            elif pgid.isdigit() and op in (b"+", b"*"):
                groups[int(pgid)] = os.fsdecode(cgroup)
                if op == b"*":
                    once.add(int(pgid))
            elif arg.isdigit() and op == b"-":
                groups.pop(int(arg), None)
                once.discard(int(arg))
    kill(groups)
    late = untold(base, groups) if base else []
    kill({-1 - i: c for i, c in enumerate(late)})  # no group of theirs known: cgroup.kill only
    remove([c for c in groups.values() if c] + late + ([base] if base else []))


if __name__ == "__main__":
    main()
