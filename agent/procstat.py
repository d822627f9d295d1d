"""CPU seconds and resident memory of instances: of their process groups, read from /proc in
one pass, or of their cgroups (agent/cgroups.py), which also count escaped descendants."""
from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def group_usage(groups: set[int]) -> dict[int, tuple[float, int]]:
    """pgid -> (cpu seconds, resident bytes) summed over the live members of each group."""
    out: dict[int, tuple[float, int]] = {}
    if not groups:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pgrp = int(fields[2])
        if pgrp in groups:
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss = int(fields[21]) * PAGE
            prev = out.get(pgrp, (0.0, 0))
            out[pgrp] = (prev[0] + cpu, prev[1] + rss)
    return out


def cgroup_usage(path: str) -> tuple[float, int] | None:
    """(cpu seconds, resident bytes) of a cgroup: its cpu.stat usage (every process it ever
    held, even without the cpu controller) and the summed RSS of its live processes. None if
    the cgroup is gone."""
    try:
        with open(os.path.join(path, "cpu.stat")) as f:
            stat = dict(line.split() for line in f if line.strip())
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = f.read().split()
    except (OSError, ValueError):
        return None
    rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return int(stat.get("usage_usec", 0)) / 1e6, rss
