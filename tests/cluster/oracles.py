"""Oracles that do not depend on sampling /proc at the right moment.

`once(lockdir, command)`: a Procfile command that runs `command` only while it holds an
exclusive `flock -n` on `lockdir/$FORMATION_INSTANCE.lock` (util-linux flock; the lock file is on
the one file system every test host shares, namespaces or not). A second copy of the same
instance, wherever it starts, cannot take the lock: it appends its id to `lockdir/SECOND` and
exits 97 at once. So "never two copies at once" is checked by `second_copies(lockdir) == []`
over the whole test, not by samples 20 ms apart. The lock is held by every process of the
instance's group (flock keeps its descriptor open in the command it runs) and released only
when the last one is gone.

`Sampler`: counts the copies of each instance on the hosts (/proc) every 20 ms and keeps the
fewest and the most seen of each, for checks that have no such stronger oracle (never zero
copies during a drain). A scan of /proc is not atomic, so the most is counted from the pids
listed when the scan began and the fewest also from those that appeared during it
(Cluster.copy_counts).
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

SECOND_EXIT = 97


def once(lockdir: str | os.PathLike, command: str) -> str:
    lock = os.path.join(os.fspath(lockdir), "$FORMATION_INSTANCE.lock")
    second = os.path.join(os.fspath(lockdir), "SECOND")
    return (f"flock -n {lock} {command} || "
            f"{{ echo \"$FORMATION_INSTANCE $$\" >> {second}; exit {SECOND_EXIT}; }}")


def second_copies(lockdir: str | os.PathLike) -> list[str]:
    """Ids (and shell pids) of every copy that found its instance already running."""
    try:
        with open(os.path.join(os.fspath(lockdir), "SECOND")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class Sampler(threading.Thread):
    """Samples how many copies of each instance run, from /proc, until stopped; keeps the
    fewest (0 when it was seen missing after having been seen) and the most of each."""

    def __init__(self, cluster: Any, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.most: Counter[str] = Counter()
        self.least: dict[str, int] = {}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            strict, late = self.cluster.copy_counts()
            for iid in set(late) | set(self.least):
                self.most[iid] = max(self.most[iid], strict.get(iid, 0))
                n = late.get(iid, 0)
                self.least[iid] = min(self.least.get(iid, n), n)
            self.samples += 1
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


STUBBORN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubborn.py")


def stubborn(lockdir: str | os.PathLike) -> str:
    """A Procfile command for tests/cluster/stubborn.py: ignores SIGTERM, same lock oracle."""
    return f"python3 {STUBBORN} {os.fspath(lockdir)}"


def events(lockdir: str | os.PathLike) -> list[tuple[str, str, int, float]]:
    """stubborn.py's notes: (what, instance id, pid, unix time)."""
    try:
        with open(os.path.join(os.fspath(lockdir), "events")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        what, iid, pid, t = line.split()
        out.append((what, iid, int(pid), float(t)))
    return out
