"""What an agent hands across the exec of an upgrade (agent/upgrade.py), and how it is read back.

The old image writes one JSON document into a memfd and execs itself with the memfd's number
in FORMATION_AGENT_HANDOVER; the fds the document names (each instance's output pipe, the
guardian's stdin) are left open across the exec, everything else closes. The new image takes
the document (take()) before anything else and adopts what it names. The document:

    {"version": 1,
     "isolation": {"mode", "base", "why"},
     "launcher": {"guardian_pid", "guardian_fd", "cgroups": {pid: path}, "spawned"},
     "sink": {"buffers": [[app, instance, [[time, text], ...]], ...], "retired", drops...},
     "link": {"epoch", "fence_after", "agent_ttl", "last_contact"},
     "runners": [{"spec": base64 Assignment, "machine": {...}, "stdout": fd or -1,
                  "unread": base64 bytes read from the pipe but not yet a line, "skipping"}]}

A machine's fields are plain data (agent/machine.py), so they go over field by field; a field
the new code does not know is left out, one it added keeps its default. Times are
time.monotonic()'s, which the exec does not reset. A document of another version is not
adopted: its guardian is told to kill the instances (agent/main.py), which are then started
again - never two copies, never an instance nobody watches.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import Any

from agent.events import Timer
from agent.lifecycle import InstanceState
from agent.machine import InstanceMachine
from agent.pump import Pump
from proto import formation_pb2 as pb

HANDOVER_ENV = "FORMATION_AGENT_HANDOVER"
MEMFD = "formation-agent-handover"  # the memfd's name: a value naming another fd is refused
VERSION = 1
MAX_BYTES = 1 << 30  # a document longer than this is not read (a lie, not a handover)
_NOT_STATE = {"check", "policy", "timers", "_out"}  # rebuilt from the spec, or below


class HandoverError(Exception):
    """The handover document cannot be read or is not one this code understands."""


class NotAHandover(HandoverError):
    """The variable names no handover memfd: set by hand, not by an upgrade."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def machine_state(machine: InstanceMachine, now: float) -> dict[str, Any]:
    """The machine's fields as JSON. A probe under way is not handed over (its task ends with
    the old image): the next one is due at once instead."""
    state = {k: v for k, v in vars(machine).items() if k not in _NOT_STATE}
    state["state"] = int(machine.state)
    state["policy"] = dict(vars(machine.policy))
    timers = {t.value: due for t, due in machine.timers.items()}
    if machine.probing:
        state["probing"] = False
        timers[Timer.PROBE.value] = now
    state["timers"] = timers
    return state


def restore_machine(machine: InstanceMachine, state: dict[str, Any]) -> None:
    """Set the machine's fields from machine_state(): only those it has, of the same kind."""
    for key, value in state.items():
        if key in _NOT_STATE or key.startswith("_") or not hasattr(machine, key):
            continue
        current = getattr(machine, key)
        if current is None or value is None or isinstance(value, type(current)) or \
                (isinstance(current, float) and isinstance(value, int)):
            setattr(machine, key, value)
    with contextlib.suppress(ValueError):  # a state this code does not know: as it was made
        machine.state = InstanceState(state.get("state", machine.state))
    for key, value in state.get("policy", {}).items():
        if hasattr(machine.policy, key):
            setattr(machine.policy, key, value)
    timers = {t.value: t for t in Timer}
    machine.timers = {timers[name]: float(due) for name, due in state.get("timers", {}).items()
                      if name in timers}


def runner_state(spec: pb.Assignment, machine: InstanceMachine, now: float, stdout_fd: int,
                 pumper: Pump | None) -> dict[str, Any]:
    """A runner's part: its spec, machine, output pipe (left open across the exec; -1 once
    it reached its end) and what its pump, if still pumping, had read but not yet cut into
    lines."""
    if stdout_fd >= 0:
        os.set_inheritable(stdout_fd, True)
    return {"spec": b64(spec.SerializeToString()), "machine": machine_state(machine, now),
            "stdout": stdout_fd, "unread": b64(pumper.unread() if pumper is not None else b""),
            "skipping": bool(pumper is not None and pumper.skipping)}


def write(document: dict[str, Any]) -> int:
    """The document in a fresh memfd, positioned at its start and inheritable: its fd.
    HandoverError if it is longer than take() would read (the upgrade is then given up)."""
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_BYTES:
        raise HandoverError(f"the handover would be {len(data)} bytes, more than {MAX_BYTES}")
    fd = os.memfd_create(MEMFD, 0)  # no MFD_CLOEXEC: it crosses the exec
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def take() -> dict[str, Any] | None:
    """The handover document this image was exec'd with, if any; the variable is removed (the
    instances it starts must not see it) and the memfd closed. HandoverError if there is one
    but it cannot be read."""
    value = os.environ.pop(HANDOVER_ENV, None)
    if value is None:
        return None
    try:
        fd = int(value) if value.isdigit() and value.isascii() else -1
        ours = fd >= 0 and os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{MEMFD}")
    except OSError:
        ours = False
    if not ours:  # not ours to read or close (stdin, say): the variable was set by hand
        raise NotAHandover(f"{HANDOVER_ENV}={value[:40]!r} is not a handover's memfd")
    try:
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                raise HandoverError(f"the handover is longer than {MAX_BYTES} bytes")
        document = json.loads(b"".join(chunks))
    except (OSError, ValueError) as e:
        raise HandoverError(f"cannot read the handover: {e}") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    if not isinstance(document, dict):
        raise HandoverError("the handover is not a JSON object")
    return document
