"""Simulated agents: a BENCHMARK AID, not a way to run anything.

`formation-agent --simulate N` connects N agents named NAME-1 … NAME-N from one process; each
accepts its assignment lists and reports every instance `running` at once, spawning nothing.
It lets one machine measure the scheduler and etcd with hundreds of agents.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from agent.link import SchedulerLink
from common.states import InstanceState
from common.tls import Credentials, TlsPaths
from proto import formation_pb2 as pb

log = logging.getLogger("agent")


class SimulatedSupervisor:
    """Looks like agent.supervisor.Supervisor to the link; runs nothing."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], pb.Assignment] = {}
        self.on_status: Callable[[pb.InstanceStatus], None] = lambda s: None

    def _status(self, a: pb.Assignment, state: InstanceState) -> pb.InstanceStatus:
        return pb.InstanceStatus(app=a.app, id=a.id, release=a.release,
                                 generation=a.generation, state=state)

    def statuses(self) -> list[pb.InstanceStatus]:
        return [self._status(a, InstanceState.RUNNING) for a in self.running.values()]

    def apply(self, items: list[pb.Assignment]) -> None:
        wanted = {(a.app, a.id): a for a in items}
        for key in [k for k in self.running if k not in wanted]:
            self.on_status(self._status(self.running.pop(key), InstanceState.STOPPED))
        for key, a in wanted.items():
            old = self.running.get(key)
            if old is None or (old.release, old.generation) != (a.release, a.generation):
                self.running[key] = a
                self.on_status(self._status(a, InstanceState.RUNNING))

    def fence(self, grace: float) -> list[str]:
        return []


async def run_simulated(count: int, base: str, addresses: list[str], capacity: int,
                        advertise: str, paths: TlsPaths | None = None) -> None:
    """With TLS, each simulated agent needs a certificate of its own name: `{name}` in the
    --tls-cert and --tls-key paths stands for it (for example `certs/{name}.pem`)."""
    log.warning("SIMULATED agents (benchmark aid): %d agents, nothing will be run", count)
    links = []
    for i in range(1, count + 1):
        name = f"{base}-{i}"
        hello = pb.Hello(name=name, address=advertise, capacity=capacity)
        creds = None if paths is None else Credentials(TlsPaths(
            paths.ca, paths.cert.replace("{name}", name), paths.key.replace("{name}", name)))
        links.append(SchedulerLink(addresses, hello, SimulatedSupervisor(),  # type: ignore
                                   tls=creds))
    # Nothing to upgrade in place here: a SIGHUP must not end the benchmark.
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: log.warning("SIGHUP ignored: simulated agents do not upgrade"))
    await asyncio.gather(*(link.run() for link in links))
