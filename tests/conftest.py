"""Fixtures: one real etcd for the session (each cluster uses its own key prefix), and
clusters of real schedulers and agents that are torn down, leaks checked, after each test."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from ctl.localcluster import Launch, free_port, wait_port
from tests.cluster import Cluster


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="formation-test-etcd-")
    port, peer = free_port(), free_port()
    # SIM115: the Part returned owns the file and closes it on stop()
    part = Launch(stdout=lambda name: open(os.path.join(tmp, "etcd.log"), "a")).etcd(  # noqa: SIM115
        os.path.join(tmp, "data"), "127.0.0.1", port, peer)
    try:
        wait_port("127.0.0.1", port, 20, part.proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        part.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _clusters(**defaults) -> Iterator[Callable[..., Cluster]]:
    """Yield a factory of started clusters; close them all afterwards, failing on leaks."""
    made: list[Cluster] = []

    def make(**kwargs) -> Cluster:
        c = Cluster(**{**defaults, **kwargs})
        made.append(c)  # before start(), so a cluster that fails to start is torn down too
        c.start()
        return c

    yield make
    errors = []
    for c in made:
        try:
            c.close()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture
def make_cluster(etcd_url: str) -> Iterator[Callable[..., Cluster]]:
    """make_cluster(agents=2, ...) -> a started Cluster (local mode) on the shared etcd."""
    yield from _clusters(etcd=etcd_url)


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    """A scheduler and two agents with the example app's folder as their workdir."""
    return make_cluster(agents=2)


def pytest_report_header(config) -> str:
    from tests.cluster.harness import default_mode
    return f"multi-host cluster mode: {default_mode()}"


@pytest.fixture
def hosts_cluster() -> Iterator[Callable[..., Cluster]]:
    """hosts_cluster(agents=3, ...) -> a started Cluster with a host per part (network
    namespaces where possible, else loopback addresses), its own etcd and a 2 s agent ttl."""
    from tests.cluster.harness import default_mode
    yield from _clusters(agent_ttl=2.0, mode=default_mode())
