"""Containing everything an instance starts: a cgroup v2 per spawn, or its process group.

A process group is easy to leave (`setsid`, a double-forking daemon); a cgroup is not: its
`cgroup.procs` lists every descendant, `cgroup.kill` SIGKILLs them all (and whatever they fork
meanwhile), and `cgroup.events` says `populated 0` once none is left. Where the agent may use
cgroups (a cgroup2 mount it can write to, `cgroup.kill`: Linux 5.14+) it makes

    <cgroup2 mount><its own cgroup>/formation-<agent name>.<agent pid>/<app>.<id>-<n>

a fresh directory per spawn (the pid keeps two agents of one name on a host, as in tests,
apart). Elsewhere it falls back to process groups and says why (Isolation.why).

How a child enters its cgroup before it can fork: it is spawned as the tiny shell wrapper
ENTER, which writes its own pid into cgroup.procs and then execs the command (same pid, so
it stays the group leader the agent watches). Writing the pid from the agent after the spawn
would race with a child that forks at once; a preexec_fn would force fork() in a process
with gRPC threads; clone3(CLONE_INTO_CGROUP) is not exposed by Python 3.11.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass

from common.aio import wait_event

CGROUP = "cgroup"
PROCESS_GROUP = "process-group"
MODES = ("auto", CGROUP, PROCESS_GROUP)
# $0 is the cgroup's cgroup.procs, "$@" the command. echo is a builtin: the shell writes `0`
# (itself) there, then replaces itself with the command.
ENTER = 'echo 0 > "$0" || exit 126; exec "$@"'
GONE_TIMEOUT = 5.0   # seconds a killed cgroup may take to empty before the agent gives up on it


class CgroupsUnavailable(Exception):
    """Why instances cannot be put in cgroups here."""


@dataclass(frozen=True)
class Isolation:
    """How this agent contains its instances: mode CGROUP with the base directory of their
    cgroups, or PROCESS_GROUP with why not cgroups."""
    mode: str
    base: str = ""
    why: str = ""

    def describe(self) -> str:
        if self.mode == CGROUP:
            return f"instances contained by cgroup v2 at {self.base}"
        return f"instances contained by process group: {self.why}"


def _unescape(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def cgroup2_mount(mounts: str) -> str | None:
    """The first cgroup2 mount point in the text of /proc/self/mounts."""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return _unescape(fields[1])
    return None


def own_cgroup(cgroups: str) -> str | None:
    """The unified (v2) cgroup in the text of /proc/self/cgroup: its `0::` line."""
    for line in cgroups.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def procs(path: str) -> list[int]:
    """Pids in the cgroup at path (not its children); [] if it is gone."""
    try:
        return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
    except (FileNotFoundError, ValueError):
        return []


def populated(path: str) -> bool:
    """True while any process lives in the cgroup or below it; False once it is gone."""
    try:
        text = _read(os.path.join(path, "cgroup.events"))
    except FileNotFoundError:
        return False
    return "populated 1" in text


def kill(path: str) -> None:
    """SIGKILL every process in the cgroup and below, including any being forked meanwhile."""
    with contextlib.suppress(FileNotFoundError):
        _write(os.path.join(path, "cgroup.kill"), "1")


def signal_all(path: str, sig: int) -> None:
    """Send sig to every process of the cgroup. Each pid is pinned with a pidfd and checked to
    be in the cgroup still, so a pid reused meanwhile is never signalled."""
    for pid in procs(path):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if pid in procs(path):
                signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass
        finally:
            os.close(fd)


def remove(path: str) -> bool:
    """rmdir the cgroup; False if it is still populated (or could not be removed)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


async def wait_empty(path: str, timeout: float) -> bool:
    """Wait until cgroup.events says `populated 0` (True) or timeout passes (False). A change
    of the file wakes an epoll (EPOLLPRI, as kernfs notifies); a re-read every 0.1 s covers a
    notification missed between the read and the registration."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        fd = os.open(os.path.join(path, "cgroup.events"), os.O_RDONLY)
    except FileNotFoundError:
        return True
    ep = select.epoll()
    changed = asyncio.Event()
    try:
        ep.register(fd, select.EPOLLPRI | select.EPOLLET)
        def woken() -> None:
            ep.poll(0)
            changed.set()

        loop.add_reader(ep.fileno(), woken)
        try:
            while b"populated 1" in os.pread(fd, 256, 0):
                left = deadline - loop.time()
                if left <= 0:
                    return False
                changed.clear()
                await wait_event(changed, min(left, 0.1))
            return True
        finally:
            loop.remove_reader(ep.fileno())
    finally:
        ep.close()
        os.close(fd)


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_stale(parent: str, name: str) -> None:
    """Kill and remove the cgroups left by earlier agents of this name that are dead (their
    guardian should have done it; this is for the case it died too)."""
    prefix = f"formation-{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            tail = entry[len(prefix):]
            if entry.startswith(prefix) and tail.isdigit() and _dead(int(tail)):
                base = os.path.join(parent, entry)
                for child in os.listdir(base):
                    sub = os.path.join(base, child)
                    if os.path.isdir(sub):
                        kill(sub)
                        remove(sub)
                remove(base)


def choose(mode: str, agent_name: str, mounts_file: str = "/proc/self/mounts",
           cgroup_file: str = "/proc/self/cgroup") -> Isolation:
    """Decide how to contain instances. mode "auto": cgroups if this agent may use them, else
    process groups; "cgroup": cgroups or CgroupsUnavailable; "process-group": never cgroups."""
    if mode == PROCESS_GROUP:
        return Isolation(PROCESS_GROUP, why="asked for (--isolation process-group)")
    try:
        return Isolation(CGROUP, base=_prepare(agent_name, mounts_file, cgroup_file))
    except CgroupsUnavailable as e:
        if mode == CGROUP:
            raise
        return Isolation(PROCESS_GROUP, why=str(e))


def _prepare(agent_name: str, mounts_file: str, cgroup_file: str) -> str:
    """Make this agent's base cgroup and prove a process can enter a cgroup below it."""
    if not sys.platform.startswith("linux"):
        raise CgroupsUnavailable(f"cgroups are Linux only, this is {sys.platform}")
    try:
        mount = cgroup2_mount(_read(mounts_file))
        own = own_cgroup(_read(cgroup_file))
    except OSError as e:
        raise CgroupsUnavailable(f"cannot read {e.filename}: {e.strerror}") from None
    if mount is None:
        raise CgroupsUnavailable(f"no cgroup2 mount in {mounts_file}")
    if own is None:
        raise CgroupsUnavailable(f"no cgroup v2 (0::) line in {cgroup_file}")
    parent = os.path.normpath(mount + own)
    if not os.path.isdir(parent):  # e.g. another cgroup namespace than the mount's
        raise CgroupsUnavailable(f"this agent's cgroup {parent} is not in the mount {mount}")
    sweep_stale(parent, agent_name)
    base = os.path.join(parent, f"formation-{agent_name}.{os.getpid()}")
    probe = os.path.join(base, "probe")
    try:
        os.makedirs(base, exist_ok=True)
        os.mkdir(probe)
        if not os.path.exists(os.path.join(probe, "cgroup.kill")):
            raise CgroupsUnavailable("no cgroup.kill (Linux before 5.14)")
        # The very way instances will enter theirs: a real process through ENTER.
        done = subprocess.run(["/bin/sh", "-c", ENTER, os.path.join(probe, "cgroup.procs"),
                               "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=10)
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise CgroupsUnavailable(f"cannot move a process into {probe}: "
                                     f"{why[-1] if why else done.returncode}")
    except OSError as e:
        remove(probe)
        remove(base)
        what = errno.errorcode.get(e.errno or 0, "error")
        raise CgroupsUnavailable(f"cannot make cgroups under {parent}: {what} "
                                 f"({e.strerror})") from None
    except subprocess.TimeoutExpired:
        remove(probe)
        remove(base)
        raise CgroupsUnavailable(f"moving a process into {probe} took over 10 s") from None
    except CgroupsUnavailable:
        remove(probe)
        remove(base)
        raise
    remove(probe)
    return base
