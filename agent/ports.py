"""The agent's pool of ports for `$PORT`, handed out from its range and checked free first."""
from __future__ import annotations

from common.net import is_free


def parse_range(text: str) -> range:
    """`5000-5999` -> range(5000, 6000); raise ValueError on anything else."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 1 <= int(lo) <= int(hi) <= 65535:
        raise ValueError(f"expected a port range A-B within 1-65535, got {text!r}")
    return range(int(lo), int(hi) + 1)


def ephemeral_range() -> range:
    """The ports this host gives outgoing connections (instances should not use them)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


class PortPool:
    """Ports of a range, each lent to one instance at a time; scans from where it left off so a
    port just released is not reused at once."""

    def __init__(self, ports: range, probe=is_free) -> None:
        self.ports = ports
        self.probe = probe
        self.used: set[int] = set()
        self.cursor = 0

    def acquire(self) -> int:
        for _ in range(len(self.ports)):
            port = self.ports[self.cursor]
            self.cursor = (self.cursor + 1) % len(self.ports)
            if port not in self.used and self.probe(port):
                self.used.add(port)
                return port
        raise RuntimeError(f"no free port in {self.ports.start}-{self.ports.stop - 1}")

    def release(self, port: int) -> None:
        self.used.discard(port)
