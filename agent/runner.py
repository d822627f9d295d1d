"""One instance's runner: the asyncio shell around its state machine (agent/machine.py).

The runner feeds the machine what happens (spawned, exited, probe results, timers, a stop
request) and carries out the commands it returns: spawn through the launcher, signal the
group (and cgroup), arm timers, probe, report. It decides nothing itself, and never polls:
the leader's exit comes from the child watcher (or a pidfd), timers from the clock.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from agent import handover, instruments
from agent.cgroups import GONE_TIMEOUT
from agent.clock import Cancellable, Clock, LoopClock
from agent.events import (
    AcquirePort,
    AwaitContact,
    Begin,
    CancelProbe,
    CancelTimer,
    Command,
    Event,
    Exited,
    Finished,
    InContact,
    Note,
    Observe,
    PortAcquired,
    PortUnavailable,
    Probe,
    ProbeResult,
    ReleaseGroup,
    ReleasePort,
    Report,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    StartTimer,
    StopRequested,
    Timer,
    TimerFired,
)
from agent.health import probe
from agent.launcher import Child, Launcher, shell_argv
from agent.lifecycle import InstanceState
from agent.logs import LogSink
from agent.machine import InstanceMachine
from agent.oneshot import OneShotMachine
from agent.ports import PortPool
from agent.pump import Pump
from common.appdef import HealthCheck
from common.appdef_pb import check_for
from proto import formation_pb2 as pb

log = logging.getLogger("agent")
DRAIN_OUTPUT = 2.0  # seconds to finish reading a dead instance's output

Prober = Callable[[HealthCheck, int, dict[str, str], str, Launcher],
                  Awaitable[tuple[bool, str]]]


class InstanceRunner:
    """Runs one assignment until told to stop. A one-shot assignment runs once; its runner
    then stays, saying how it ended (succeeded or failed), until told to stop."""

    def __init__(self, spec: pb.Assignment, ports: PortPool, launcher: Launcher, sink: LogSink,
                 report: Callable[[pb.InstanceStatus], None], workdir: str,
                 base_env: dict[str, str],
                 wait_contact: Callable[[], Awaitable[None]] | None = None,
                 clock: Clock | None = None, prober: Prober = probe) -> None:
        self.spec = spec
        self.ports = ports
        self.launcher = launcher
        self.sink = sink
        self.report = report
        self.workdir = workdir
        self.base_env = base_env
        self.wait_contact = wait_contact
        self.clock = clock or LoopClock()
        self.prober = prober
        self.check = None if spec.oneshot else check_for(spec)  # a one-shot run has none
        self.machine = (OneShotMachine(spec.id, spec.stop_timeout, spec.timeout, spec.at_most_once)
                        if spec.oneshot else
                        InstanceMachine(spec.id, spec.stop_timeout, self.check, spec.at_most_once))
        self.child: Child | None = None
        self._pump: asyncio.Task | None = None
        self._pumper: Pump | None = None
        self._probe: asyncio.Task | None = None
        self._timers: dict[Timer, Cancellable] = {}
        self._tasks: set[asyncio.Task] = set()      # cancelled once stopped
        self._releases: set[asyncio.Task] = set()   # dead groups' output, drained before stop
        self._events: collections.deque[Event] = collections.deque()
        self._feeding = False
        self._finished = asyncio.Event()

    # ---- what others read -----------------------------------------------------------------

    @property
    def key(self) -> tuple[str, str, int, int]:
        """The supervisor's key: one copy of an instance, at one (release, generation)."""
        return self.spec.app, self.spec.id, self.spec.release, self.spec.generation

    @property
    def state(self) -> InstanceState:
        return self.machine.state

    @property
    def pid(self) -> int:
        return self.machine.pid

    @property
    def restarts(self) -> int:
        return self.machine.restarts

    def status(self) -> pb.InstanceStatus:
        m = self.machine
        return pb.InstanceStatus(app=self.spec.app, id=self.spec.id, release=self.spec.release,
                                 generation=self.spec.generation, state=m.state, pid=m.pid,
                                 port=m.port, restarts=m.restarts, reason=m.reason)

    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(self.spec.env)
        env.update(PORT=str(self.machine.port), FORMATION_APP=self.spec.app,
                   FORMATION_INSTANCE=self.spec.id, FORMATION_RELEASE=str(self.spec.release),
                   FORMATION_TYPE=self.spec.type)
        return env

    # ---- life -------------------------------------------------------------------------------

    def start(self, after: asyncio.Task | None = None) -> None:
        """Start once `after` (the stop of this instance's previous copy) is done."""
        if after is None or after.done():
            self.feed(Begin())
        else:
            self._background(self._begin_after(after), "begin")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop for good (SIGTERM, stop_timeout or timeout, SIGKILL); return once the process
        is gone and its output read."""
        self.feed(StopRequested(timeout))
        await self._finished.wait()
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def feed(self, event: Event) -> None:
        """Hand the machine an event and carry out its commands. Events that commands cause
        meanwhile wait their turn, so the machine sees one event at a time."""
        self._events.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._events:
                for command in self.machine.handle(self._events.popleft(), self.clock.now()):
                    self._do(command)
        finally:
            self._feeding = False

    # ---- commands ---------------------------------------------------------------------------

    def _do(self, command: Command) -> None:
        match command:
            case Report(state=state, reason=reason, pid=pid, port=port, restarts=restarts):
                self.report(pb.InstanceStatus(
                    app=self.spec.app, id=self.spec.id, release=self.spec.release,
                    generation=self.spec.generation, state=state, pid=pid, port=port,
                    restarts=restarts, reason=reason))
            case Spawn():
                self._background(self._spawn(), "spawn")
            case Signal(pid=pid, sig=sig):
                self.launcher.kill_group(pid, sig)
            case ReleaseGroup(pid=pid):
                self._release(pid)
            case StartTimer(timer=timer, delay=delay):
                self._cancel_timer(timer)
                self._timers[timer] = self.clock.call_later(delay, lambda: self._fire(timer))
            case CancelTimer(timer=timer):
                self._cancel_timer(timer)
            case Probe():
                self._probe = self._background(self._run_probe(), "probe")
            case CancelProbe():
                if self._probe is not None:
                    self._probe.cancel()
            case AwaitContact():
                if self.wait_contact is None:
                    self.feed(InContact())
                else:
                    self._background(self._contact(self.wait_contact), "contact")
            case AcquirePort():
                try:
                    self.feed(PortAcquired(self.ports.acquire()))
                except RuntimeError as e:
                    self.feed(PortUnavailable(str(e)))
            case ReleasePort(port=port):
                self.ports.release(port)
            case Observe(phase=phase, seconds=seconds):
                instruments.START_SECONDS.labels(phase).observe(seconds)
            case Note(text=text, warning=warning):
                log.log(logging.WARNING if warning else logging.INFO, "%s", text)
            case Finished():
                for timer in list(self._timers):
                    self._cancel_timer(timer)
                for task in self._tasks:
                    task.cancel()
                self._finished.set()

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self.feed(TimerFired(timer))

    def _cancel_timer(self, timer: Timer) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _background(self, coro: Coroutine[None, None, None], what: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{what} {self.spec.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._releases.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s of %s failed", task.get_name(), self.spec.id,
                      exc_info=task.exception())

    async def _begin_after(self, after: asyncio.Task) -> None:
        await asyncio.wait([after])  # its outcome does not matter, only that it is over
        self.feed(Begin())

    async def _contact(self, wait_contact: Callable[[], Awaitable[None]]) -> None:
        await wait_contact()
        self.feed(InContact())

    async def _spawn(self) -> None:
        try:
            child = await self.launcher.spawn(shell_argv(self.spec.command), self.env(),
                                              self.workdir, self.spec.at_most_once,
                                              name=f"{self.spec.app}.{self.spec.id}")
        except OSError as e:
            self.feed(SpawnFailed(str(e)))
            return
        self._attach(child)
        self.feed(Spawned(child.pid))
        await self._watch(child)

    def _attach(self, child: Child, skipping: bool = False) -> None:
        self.child = child
        if child.stdout is not None:
            self._pumper = Pump(child.stdout, self.spec.app, self.spec.id, self.sink,
                                skipping=skipping)
            self._pump = asyncio.create_task(self._pumper.run(), name=f"output {self.spec.id}")

    async def _watch(self, child: Child) -> None:
        """Feed the leader's exit (the leader itself, not the end of its output)."""
        self.feed(Exited(await child.wait(), child.pid))

    # ---- an agent upgrade (agent/upgrade.py) ------------------------------------------------

    def settled(self) -> bool:
        """Nothing under way a handover cannot carry: a spawn, a dead group's drain. (An exit
        not yet fed to the machine: the supervisor asks the kernel, see its settled().)"""
        return not (self.machine.spawning or self._releases)

    def handover(self) -> dict[str, Any]:
        live = self._pump is not None and not self._pump.done()  # not yet at the pipe's end
        fd = self.child.stdout_fd() if self.child is not None and live else -1
        return handover.runner_state(self.spec, self.machine, self.clock.now(), fd,
                                     self._pumper if live else None)

    def adopt(self, state: dict[str, Any], child: Child | None) -> None:
        """Go on from a handover: the machine, its timers, the leader watched and read on."""
        handover.restore_machine(self.machine, state["machine"])
        if child is not None:
            self._attach(child, skipping=bool(state.get("skipping")))
            self._background(self._watch(child), "watch")
        now = self.clock.now()
        for timer, due in self.machine.timers.items():
            self._timers[timer] = self.clock.call_later(max(0.0, due - now),
                                                        functools.partial(self._fire, timer))
        if not self.machine.begun:
            self.feed(Begin())
        elif self.machine.waiting_contact:
            self._do(AwaitContact())
        elif self.machine.waiting_port:
            self._do(AcquirePort())

    def _release(self, pid: int) -> None:
        child, pumping = self.child, self._pump
        self.child = self._pump = None
        if child is None or child.pid != pid:
            self.launcher.forget_group(pid)
            return
        task = asyncio.create_task(self._drain(child, pumping), name=f"drain {self.spec.id}")
        self._releases.add(task)
        task.add_done_callback(self._task_done)

    async def _drain(self, child: Child, pumping: asyncio.Task | None) -> None:
        """The group (and cgroup) was SIGKILLed, so its pipe closes; a process that left the
        group may keep it open, hence the bound. In cgroup mode the instance is over once its
        cgroup is empty (bounded too: a process stuck in the kernel cannot hold a stop)."""
        if pumping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pumping, DRAIN_OUTPUT)
        if not await self.launcher.gone(child.pid, GONE_TIMEOUT):
            log.warning("%s: processes of its cgroup are still there %.0fs after SIGKILL",
                        self.spec.id, GONE_TIMEOUT)
        child.close()
        self.launcher.forget_group(child.pid)

    async def _run_probe(self) -> None:
        assert self.check is not None
        ok, why = await self.prober(self.check, self.machine.port, self.env(), self.workdir,
                                    self.launcher)
        self.feed(ProbeResult(ok, why))

