"""A real Formation cluster for tests and people: etcd, a scheduler and agents as processes,
each on a host of its own (a network namespace) where the machine allows.

    from tests.cluster import Cluster
    with Cluster(agents=3, mode="auto") as c:
        c.ctl("deploy", "examples/Procfile")
        c.cut("agent-2")

From the command line: `python -m tests.cluster up --hosts 4`.
"""
from tests.cluster.harness import Cluster, Timeout, wait_for

__all__ = ["Cluster", "Timeout", "wait_for"]
