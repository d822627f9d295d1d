"""Converges the agent's runners to its assignment list (level-triggered, idempotent).

    list arrives -> stop runners not on it (in the background)
                 -> replace runners whose release or command changed (stop, then start)
                 -> start runners for new entries
Applying the same list twice changes nothing.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agent.health import probe
from agent.launcher import Launcher
from agent.logs import LogSink
from agent.ports import PortPool
from agent.runner import Clock, InstanceRunner, Prober
from proto import formation_pb2 as pb

Key = tuple[str, str]


def _same_spec(a: pb.Assignment, b: pb.Assignment) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


class Supervisor:
    """All of the agent's runners, keyed by (app, instance id)."""

    def __init__(self, launcher: Launcher, sink: LogSink, ports: PortPool, workdir: str,
                 base_env: dict[str, str],
                 on_status: Callable[[pb.InstanceStatus], None] = lambda s: None,
                 clock: Clock | None = None, prober: Prober = probe) -> None:
        self.launcher = launcher
        self.sink = sink
        self.ports = ports
        self.workdir = workdir
        self.base_env = base_env
        self.on_status = on_status
        self.clock = clock  # None: the event loop's; tests pass a fake one
        self.prober = prober
        self.runners: dict[Key, InstanceRunner] = {}
        self.wait_contact: Callable[[], Awaitable[None]] | None = None  # set by the link
        self.stopping: dict[Key, asyncio.Task] = {}
        self.leaving: set[InstanceRunner] = set()  # runners being stopped (for metrics)

    def statuses(self) -> list[pb.InstanceStatus]:
        return [r.status() for r in self.runners.values()]

    def _report(self, status: pb.InstanceStatus) -> None:
        self.on_status(status)  # looked up now: the link sets on_status after we are made

    def apply(self, items: list[pb.Assignment]) -> None:
        wanted = {(a.app, a.id): a for a in items}
        for key, runner in list(self.runners.items()):
            spec = wanted.get(key)
            if spec is None or not _same_spec(spec, runner.spec):
                self._stop(key)
        for key, spec in wanted.items():
            if key not in self.runners:
                self._start(spec)

    def _start(self, spec: pb.Assignment) -> None:
        key = (spec.app, spec.id)
        runner = InstanceRunner(spec, self.ports, self.launcher, self.sink, self._report,
                                self.workdir, self.base_env, self.wait_contact, self.clock,
                                self.prober)
        self.runners[key] = runner
        runner.start(after=self.stopping.get(key))

    def fence(self, grace: float) -> list[str]:
        """Stop every at_most_once instance within grace seconds; return their ids."""
        fenced = [key for key, r in self.runners.items() if r.spec.at_most_once]
        for key in fenced:
            self._stop(key, min(grace, self.runners[key].spec.stop_timeout))
        return [key[1] for key in fenced]

    def _stop(self, key: Key, timeout: float | None = None) -> None:
        runner = self.runners.pop(key)
        previous = self.stopping.get(key)
        self.leaving.add(runner)

        async def stop() -> None:
            if previous is not None:
                await asyncio.shield(previous)
            try:
                await runner.stop(timeout)
            finally:
                self.leaving.discard(runner)
            if self.stopping.get(key) is task:
                del self.stopping[key]
                if key not in self.runners:
                    self.sink.forget(*key)

        task = asyncio.create_task(stop(), name=f"stop {key[1]}")
        self.stopping[key] = task

    async def stop_all(self) -> None:
        """Stop every instance, concurrently; used at agent shutdown."""
        for key in list(self.runners):
            self._stop(key)
        while self.stopping:
            await asyncio.gather(*self.stopping.values(), return_exceptions=True)
