"""One instance's runner: spawn, watch, restart with backoff, stop. One asyncio task each.

The runner owns the instance's process group: it spawns it through the launcher, awaits its
exit (never polls), and on stop sends SIGTERM to the group, waits stop_timeout, then SIGKILL.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Awaitable, Callable

from agent import metrics
from agent.health import probe
from common.appdef import HealthCheck
from common.appdef_pb import check_for
from agent.launcher import Child, Launcher, shell_argv
from agent.lifecycle import InstanceState, RestartPolicy, describe_exit
from agent.logs import LogSink, pump
from agent.ports import PortPool
from proto import formation_pb2 as pb

log = logging.getLogger("agent")
DRAIN_OUTPUT = 2.0  # seconds to finish reading a dead instance's output


class InstanceRunner:
    """Runs one assignment until told to stop."""

    def __init__(self, spec: pb.Assignment, ports: PortPool, launcher: Launcher, sink: LogSink,
                 report: Callable[["InstanceRunner"], None], workdir: str,
                 base_env: dict[str, str],
                 wait_contact: Callable[[], Awaitable[None]] | None = None) -> None:
        self.spec = spec
        self.ports = ports
        self.port = 0  # taken from the pool before the first start, given back once stopped
        self.launcher = launcher
        self.sink = sink
        self.report = report
        self.workdir = workdir
        self.base_env = base_env
        self.wait_contact = wait_contact
        self.state = InstanceState.PENDING
        self.pid = 0
        self.restarts = 0
        self.reason = ""
        self.health_failures = 0  # failed checks over the instance's life here (a counter)
        self.exits = 0
        self.policy = RestartPolicy()
        self._unhealthy = ""  # why the health monitor ended the current process
        self.child: Child | None = None
        self._stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.spec.app, self.spec.id

    def status(self) -> pb.InstanceStatus:
        return pb.InstanceStatus(app=self.spec.app, id=self.spec.id, release=self.spec.release,
                                 state=self.state, pid=self.pid, port=self.port,
                                 restarts=self.restarts, reason=self.reason)

    def _set(self, state: InstanceState, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self.report(self)

    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(self.spec.env)
        env.update(PORT=str(self.port), FORMATION_APP=self.spec.app,
                   FORMATION_INSTANCE=self.spec.id, FORMATION_RELEASE=str(self.spec.release),
                   FORMATION_TYPE=self.spec.type)
        return env

    def start(self, after: asyncio.Task | None = None) -> None:
        self.task = asyncio.create_task(self._run(after), name=f"runner {self.spec.id}")

    async def _run(self, after: asyncio.Task | None) -> None:
        if after is not None:  # the previous runner of this instance must be gone first
            await asyncio.shield(after)
        while not self._stop.is_set():
            if self.spec.at_most_once and self.wait_contact is not None:
                # Never (re)start one while out of touch: it may run elsewhere by now.
                await self._until_stop_or(self.wait_contact())
                if self._stop.is_set():
                    break
            if not self.port:
                try:
                    self.port = self.ports.acquire()
                except RuntimeError as e:  # retried with backoff: another may stop meanwhile
                    delay = self.policy.exited(time.monotonic())
                    log.warning("cannot start %s: %s; retrying in %.1fs", self.spec.id, e, delay)
                    self._set(InstanceState.CRASHED, str(e))
                    await self._backoff(delay)
                    continue
            self._set(InstanceState.STARTING)
            try:
                child = await self.launcher.spawn(shell_argv(self.spec.command), self.env(),
                                                  self.workdir, self.spec.at_most_once)
            except OSError as e:
                delay = self.policy.exited(time.monotonic())
                self._set(InstanceState.CRASHED, f"could not start: {e}")
                await self._backoff(delay)
                continue
            self.child, self.pid = child, child.pid
            if self._stop.is_set():  # stopped while it was being spawned: it never should run
                self.launcher.kill_group(child.pid, signal.SIGKILL)
            spawned = time.monotonic()
            self.policy.started(spawned)
            pumping = None if child.stdout is None else asyncio.create_task(
                pump(child.stdout, self.spec.app, self.spec.id, self.sink))
            check = check_for(self.spec)
            monitor = None
            self._unhealthy = ""
            metrics.START_SECONDS.labels("running").observe(time.monotonic() - spawned)
            if check is None:
                self._set(InstanceState.RUNNING)
            else:
                self.reason = "waiting for its first health check"
                self.report(self)
                monitor = asyncio.create_task(self._watch_health(child, check, spawned))
            code = await child.wait()
            self.exits += 1
            if monitor is not None:
                monitor.cancel()
            # The leader is gone; anything it left in its group goes too.
            self.launcher.kill_group(child.pid, signal.SIGKILL)
            if pumping is not None:
                try:
                    await asyncio.wait_for(pumping, DRAIN_OUTPUT)
                except asyncio.TimeoutError:
                    pass
            child.close()
            self.launcher.forget_group(child.pid)
            self.child = None
            if self._stop.is_set():
                break
            self.restarts += 1
            delay = self.policy.exited(time.monotonic())
            what = self._unhealthy or describe_exit(code)
            log.info("%s %s; restarting %s", self.spec.id, what,
                     "now" if delay == 0 else f"in {delay:.1f}s")
            self._set(InstanceState.CRASHED, what)
            await self._backoff(delay)
        self.pid = 0
        if self.port:
            self.ports.release(self.port)
        self._set(InstanceState.STOPPED)

    async def _watch_health(self, child: Child, check: HealthCheck, spawned: float) -> None:
        """Probe until the process ends: starting -> running on the first success (probing
        quickly until then); running <-> unhealthy; `failures` in a row past the grace period
        restart it (SIGTERM, stop_timeout, SIGKILL)."""
        healthy_once, failures, delay = False, 0, 0.02
        while True:
            await asyncio.sleep(delay)
            delay = check.interval if healthy_once else min(delay * 2, 0.25, check.interval)
            ok, why = await probe(check, self.port, self.env(), self.workdir)
            if ok:
                failures = 0
                if not healthy_once:
                    metrics.START_SECONDS.labels("healthy").observe(time.monotonic() - spawned)
                healthy_once = True
                if self.state != InstanceState.RUNNING:
                    self._set(InstanceState.RUNNING)
                continue
            self.health_failures += 1
            if not healthy_once and time.monotonic() - spawned < check.grace:
                if why != self.reason:  # still starting: failures do not count yet
                    self.reason = why
                    self.report(self)
                continue
            failures += 1
            if healthy_once:
                self._set(InstanceState.UNHEALTHY, why)
            if failures >= (check.failures or 3):
                self._unhealthy = f"health check failed {failures} times: {why}"
                log.warning("%s %s; restarting it", self.spec.id, self._unhealthy)
                self.launcher.kill_group(child.pid, signal.SIGTERM)
                await asyncio.sleep(self.spec.stop_timeout)
                self.launcher.kill_group(child.pid, signal.SIGKILL)
                return

    async def _until_stop_or(self, awaitable: Awaitable[None]) -> None:
        waiting = asyncio.ensure_future(awaitable)
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()

    async def _backoff(self, delay: float) -> None:
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the group, wait stop_timeout (or timeout), then SIGKILL; return once it has
        exited."""
        self._stop.set()
        child = self.child
        grace = self.spec.stop_timeout if timeout is None else timeout
        if child is not None:
            self._set(InstanceState.STOPPING)
            self.launcher.kill_group(child.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.task), grace)
            except asyncio.TimeoutError:
                log.info("%s did not stop within %.1fs; killing it", self.spec.id, grace)
                self.launcher.kill_group(child.pid, signal.SIGKILL)
        if self.task is not None:
            await self.task


def base_environment() -> dict[str, str]:
    """What instances inherit from the agent: its environment without its own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FORMATION_")}
