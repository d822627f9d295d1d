"""Test hosts: one Linux network namespace per host, wired to a bridge in a namespace of its own,
plus a link from the root namespace so the test process can reach every host.

    root ns ── fmXXXXr ─┐
                        │   bridge ns: br0
    host ns fm-XXXX-h1 ─┤   (each host: eth0 with 10.A.B.n/24, lo up)
    host ns fm-XXXX-h2 ─┘

Names carry the run id and the /24 is chosen free, so two runs never collide. Cutting a host
off sets its bridge port down (both directions, like a pulled cable); healing sets it up.
Where namespaces cannot be made (not root, no `ip`), hosts are loopback addresses instead.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
from dataclasses import dataclass


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def namespaces_possible() -> bool:
    """Root with a working `ip netns` (made and removed once to be sure)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"fm-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        return True
    except (NetworkError, OSError, subprocess.TimeoutExpired):
        return False


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    nets = []
    for word in out.split():
        if "/" in word:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetworkError("no free 10.x /24 for the test network")


@dataclass
class Host:
    name: str
    address: str
    ns: str | None = None  # None in loopback mode

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv

    def net_inode(self) -> int | None:
        return os.stat(f"/run/netns/{self.ns}").st_ino if self.ns else None


class Network:
    """Makes and removes the hosts. `mode` is "netns" or "loopback"."""

    def __init__(self, run_id: str, mode: str) -> None:
        self.run_id = run_id[:6]
        self.mode = mode
        self.hosts: dict[str, Host] = {}
        self.bridge_ns = f"fm-{self.run_id}-br"
        self.root_link = f"fm{self.run_id}r"
        self.subnet: ipaddress.IPv4Network | None = None
        self._made: list[str] = []
        self._ports: dict[str, str] = {}  # host -> its port on the bridge

    def create(self, names: list[str]) -> dict[str, Host]:
        if self.mode == "loopback":
            for i, name in enumerate(names):
                self.hosts[name] = Host(name, f"127.0.0.{i + 2}")
            return self.hosts
        try:
            self.subnet = pick_subnet()
            addrs = list(self.subnet.hosts())
            _ip("netns", "add", self.bridge_ns)
            self._made.append(self.bridge_ns)
            _ip("link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
            _ip("link", "set", "br0", "up", ns=self.bridge_ns)
            # The root namespace's way in: .254
            _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root",
                "netns", self.bridge_ns)
            _ip("link", "set", "root", "master", "br0", "up", ns=self.bridge_ns)
            _ip("addr", "add", f"{addrs[-1]}/24", "dev", self.root_link)
            _ip("link", "set", self.root_link, "up")
            for i, name in enumerate(names):
                ns = f"fm-{self.run_id}-{name}"
                _ip("netns", "add", ns)
                self._made.append(ns)
                port = f"p{i}"
                _ip("link", "add", "eth0", "type", "veth", "peer", "name", port,
                    "netns", self.bridge_ns, ns=ns)
                _ip("link", "set", port, "master", "br0", "up", ns=self.bridge_ns)
                _ip("addr", "add", f"{addrs[i]}/24", "dev", "eth0", ns=ns)
                _ip("link", "set", "eth0", "up", ns=ns)
                _ip("link", "set", "lo", "up", ns=ns)
                self.hosts[name] = Host(name, str(addrs[i]), ns)
                self._ports[name] = port
        except BaseException:
            self.destroy()
            raise
        return self.hosts

    def cut(self, name: str) -> None:
        """Cut a host off from every other host (and from the test process)."""
        if self.mode != "netns":
            raise NetworkError("cutting a host off needs namespace mode")
        _ip("link", "set", self._ports[name], "down", ns=self.bridge_ns)

    def heal(self, name: str) -> None:
        _ip("link", "set", self._ports[name], "up", ns=self.bridge_ns)

    def destroy(self) -> None:
        """Remove every namespace and link this run made; safe to call twice."""
        if self.mode != "netns":
            return
        _ip("link", "del", self.root_link, check=False)
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this run that still exist (should be none after destroy)."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [n for n in listed if n.startswith(f"fm-{self.run_id}-")]
