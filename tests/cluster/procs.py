"""The truth from the host itself: which processes exist, read from /proc."""
from __future__ import annotations

import os
from collections.abc import Iterator


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    yield int(entry), f.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue


def group_members(group: int) -> list[int]:
    """Live pids whose process group is `group`."""
    return [pid for pid, fields in stats() if fields[0] != "Z" and int(fields[2]) == group]


def zombies(parent: int) -> list[int]:
    """Children of parent that exited and were never reaped."""
    return [pid for pid, fields in stats() if fields[0] == "Z" and int(fields[1]) == parent]


def with_env_late(key: str, value: str) -> tuple[list[int], list[int]]:
    """with_env, and the matching pids that appeared while /proc was being read (a second
    listing): a process that replaced one which died during the scan is not missed."""
    seen = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    first = [p for p in seen if alive(p) and environ(p).get(key) == value]
    known = set(seen)
    late = [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) not in known]
    return first, [p for p in late if alive(p) and environ(p).get(key) == value]


def with_env(key: str, value: str) -> list[int]:
    """Live pids whose environment has key=value (how tests find instances and their children)."""
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and alive(int(e)) and environ(int(e)).get(key) == value]


def ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def net_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError):
        return None
