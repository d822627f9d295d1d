"""A real Formation cluster for tests and people: etcd, a scheduler and agents as processes.

    from tests.cluster import Cluster
    with Cluster(agents=2) as c:
        c.ctl("deploy", "examples/Procfile")
"""
from tests.cluster.local import Cluster, wait_for

__all__ = ["Cluster", "wait_for"]
