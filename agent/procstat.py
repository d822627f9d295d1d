"""CPU seconds and resident memory of process groups, read from /proc in one pass."""
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
