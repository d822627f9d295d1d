"""Seeing children in /proc: by the exact start of their command line, quickly."""
from __future__ import annotations

import os


def scan(prefix: bytes) -> set[int]:
    """Live pids whose /proc/PID/cmdline starts with prefix."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read(len(prefix)) == prefix:
                        found.add(int(entry))
            except OSError:
                pass
    return found


def new_match(prefix: bytes, before: set[int]) -> int | None:
    """A pid not in `before` whose cmdline starts with prefix (checks only new pids)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in before:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read(len(prefix)) == prefix:
                        return int(entry)
            except OSError:
                pass
    return None


def stat(pid: int) -> tuple[float, int, int]:
    """(cpu seconds, rss bytes, peak rss bytes) of one process."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, rss, peak
