"""Simulated agents (formation-agent --simulate, a benchmark aid) on a harness cluster, over
mutual TLS when the cluster has it, else plaintext.

With TLS, each simulated agent NAME-1 … NAME-N needs an agent certificate of its own name: they
are issued here from the cluster's CA, and the agent process gets `{name}` in its --tls-cert and
--tls-key paths, which it fills in per simulated agent (agent/simulate.py).
"""
from __future__ import annotations

import os
import sys

from ctl.localcluster import Part
from tests.cluster import Cluster, wait_for
from tests.cluster.harness import CONTROL


def tls_flags(c: Cluster, base: str, count: int) -> list[str]:
    """The --tls-* flags for `count` simulated agents named BASE-i; none without TLS."""
    if c.certs is None:
        return []
    for i in range(1, count + 1):
        c.certs.issue("agent", f"{base}-{i}")  # DIR/NAME.pem and DIR/NAME-key.pem
    return ["--tls-ca", c.certs.ca_path,
            "--tls-cert", os.path.join(c.certs.dir, "{name}.pem"),
            "--tls-key", os.path.join(c.certs.dir, "{name}-key.pem")]


def start(c: Cluster, count: int, capacity: int, base: str = "sim",
          timeout: float = 60) -> Part:
    """Start `count` simulated agents of `capacity` each in one process and wait until the
    scheduler lists them all connected."""
    part = c.launch(CONTROL).start("simulated", [
        sys.executable, "-m", "agent", "--name", base, "--simulate", str(count),
        "--scheduler", c.listen, "--capacity", str(capacity), "--advertise", "127.0.0.1",
        *tls_flags(c, base, count)])
    c.parts["agent-simulated"] = part
    wait_for(lambda: sum(a.connected for a in c.client.agents()) == count, timeout,
             what=f"{count} simulated agents ({'TLS' if c.certs else 'plaintext'})")
    return part
