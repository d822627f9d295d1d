"""HAProxy: where its binary is, the configuration formation-lb gives it, and the process
itself (started as a foreground child that dies with formation-lb, stopped softly).

The configuration has no servers: they come and go through the runtime API (balancer.py),
never by a reload. Retries are the safe ones only:

- `conn-failure` for every request: the connection failed, so nothing was sent (an instance
  that stopped listening, a machine gone before its checks failed);
- `empty-response` only for GET, HEAD and OPTIONS (`disable-l7-retry` for every other
  method): the connection closed before any reply, typically an instance that is stopping,
  and the request may have been processed, which only a safe method may be repeated after;
- not `response-timeout`: a retry would come after `timeout server` anyway, and would send a
  slow request to every server in turn (HAProxy's manual warns it amplifies load);
- `option redispatch 1`: every retry goes to another server.

`timeout tunnel 1h`: a WebSocket may stay idle for long (not `timeout server`'s 30 s); when
its instance leaves, it is cut after balancer.FORCE_AFTER anyway.

`noreuseport`: HAProxy sets SO_REUSEPORT by default (for its own seamless reloads), so a second
formation-lb given the same --listen would share the port and take half its connections
instead of failing with "address in use".
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import resource
import signal
from collections import deque

from common.escape import escape
from lb.runtime import Runtime
from lb.servers import address

log = logging.getLogger("lb")
BACKEND = "instances"
RETRY_ON = "conn-failure empty-response"
SOFT_STOP = 10.0   # seconds in-flight requests get to finish when formation-lb stops
READY_TIMEOUT = 10.0
MAX_CONN = 100_000
PR_SET_PDEATHSIG = 1
START_LINES = 50   # of its output kept to show if it fails to start
# HAProxy's echo of formation-lb's own commands (balancer.py logs one line per set instead);
# what HAProxy finds out by itself (a server DOWN by its checks, alerts) is logged.
ECHO = re.compile(r" : (CLI : )?('server \S+' : New server registered|Server deleted\."
                  r"|Server \S+ is (UP/READY \(leaving forced maintenance\)"
                  r"|going DOWN for maintenance))")


def max_conn() -> int:
    """Connections HAProxy may hold: two descriptors each within the hard open-files limit
    (HAProxy raises its own soft limit to it; an explicit maxconn over it is refused as
    "Cannot raise FD limit"), with room for listeners and checks."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return MAX_CONN
    return max(64, min(MAX_CONN, (hard - 200) // 2))


def config(listen_host: str, listen_port: int, socket_path: str, maxconn: int) -> str:
    """The whole configuration; the caller has checked every value (servers.check_host)."""
    return f"""\
global
    stats socket {socket_path} mode 600 level admin
    stats timeout 30s
    maxconn {maxconn}
    hard-stop-after {SOFT_STOP:g}s
    noreuseport

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout tunnel 1h
    retries 3
    option redispatch 1
    retry-on {RETRY_ON}

frontend listen
    bind {address(listen_host, listen_port)}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    http-request disable-l7-retry unless METH_GET || METH_OPTIONS
"""


class Haproxy:
    """The running HAProxy: its output is kept while it starts, then logged line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.started = False
        self.first_lines: deque[str] = deque(maxlen=START_LINES)
        self._relay = asyncio.create_task(self._read_output())
        self.exited: asyncio.Task[int] = asyncio.create_task(proc.wait())

    @classmethod
    async def start(cls, binary: str, config_path: str) -> Haproxy:
        """Start it in a process group of its own (a Ctrl-C to formation-lb's group does not
        hard-stop it: formation-lb stops it softly), killed by the kernel if formation-lb
        dies (PR_SET_PDEATHSIG, set in the child before exec; if the parent is already gone
        by then the child exits)."""
        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getpid()

        def die_with_parent() -> None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)

        proc = await asyncio.create_subprocess_exec(
            binary, "-db", "-f", config_path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent, process_group=0)
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read_output(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            if self.started:
                if not ECHO.search(line):
                    log.info("haproxy: %s", escape(line))
            else:
                self.first_lines.append(line)

    async def ready(self, runtime: Runtime) -> bool:
        """Poll its runtime API until it answers (True), it exits or READY_TIMEOUT passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline and not self.exited.done():
            if await runtime.answers():
                self.started = True
                return True
            await asyncio.wait([self.exited], timeout=0.02)
        return False

    async def output(self) -> list[str]:
        """What it said while starting (all of it once it has exited)."""
        if self.exited.done():
            await asyncio.wait([self._relay], timeout=1.0)
        return list(self.first_lines)

    async def stop(self, grace: float = SOFT_STOP) -> None:
        """Soft stop (SIGUSR1: stop listening, let requests in flight finish) for grace
        seconds, then SIGTERM, then SIGKILL; returns once it has exited."""
        for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 2.0),
                          (signal.SIGKILL, None)):
            if self.exited.done():
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            await asyncio.wait([self.exited], timeout=wait)
        self._relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay
