"""systemd's readiness protocol (sd_notify(3)) with the standard library only: one datagram of
`KEY=VALUE` lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or `@name` for the
abstract namespace). Without that variable (not started by systemd with Type=notify) every call
is a no-op. A send never raises and never blocks: a service manager that cannot hear us must
not take the daemon down or stall its event loop.

$NOTIFY_SOCKET is left in the environment on purpose: the agent re-executes itself on SIGHUP
and must notify again from the new image. Its children must not inherit it (nor the other
variables of PRIVATE_ENV): agent/runner.py's base_environment leaves them out.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("sdnotify")

# Set by systemd for the service's main process only; a child that inherits them could speak
# for the service (NOTIFY_SOCKET), or would believe a watchdog or passed sockets are its own.
PRIVATE_ENV = frozenset({"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID",
                         "LISTEN_FDS", "LISTEN_FDNAMES"})


def _address(name: str) -> str | None:
    """The socket address of a $NOTIFY_SOCKET value; None for one we cannot use."""
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]  # Linux's abstract namespace, as sd_notify reads `@`
    if name.startswith("/"):
        return name
    return None  # empty, relative, or a transport we do not speak (`vsock:`)


def notify(state: str) -> bool:
    """Send `state` (newline-separated KEY=VALUE assignments) to the service manager; True if
    it was sent, False without a usable $NOTIFY_SOCKET or when sending failed."""
    address = _address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)  # a full receive queue is EAGAIN, not a stalled daemon
            s.sendto(state.encode(), socket.MSG_DONTWAIT, address)
    except (OSError, UnicodeError) as e:
        log.debug("cannot notify the service manager at %r: %s", address, e)
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline would start another assignment


def ready(status: str = "") -> None:
    """Tell systemd the daemon serves (Type=notify: the start is complete)."""
    notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def reloading() -> None:
    """Tell systemd a reload begins; `ready()` ends it. systemd 253+ wants the monotonic clock
    of that moment beside it (older ones ignore the field)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> None:
    """Tell systemd the daemon is shutting down (so it is not counted as ready meanwhile)."""
    notify("STOPPING=1")
