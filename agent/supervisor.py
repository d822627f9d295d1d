"""Converges the agent's runners to its assignment list (level-triggered, idempotent).

A runner is one copy of an instance, keyed by (app, id, release, generation): during a
rolling deploy the list may hold the same id at two releases, and during a `ctl restart` at one
release with two generations (how many times it was restarted there); then both copies run side
by side (each with its own $PORT, process group, cgroup and status reports). A copy is a
(release, generation): what follows says "release" for short.

    list arrives -> stop runners whose key is not on it (in the background)
                 -> replace runners whose spec changed at the same key (stop, then start)
                 -> start runners for new entries: at once, unless a copy of the same
                    (app, id), at any release, is being stopped; then once that stop is over
Applying the same list twice changes nothing. So swapping (web.1, v1) for (web.1, v2) in the
list stops v1 first, then starts v2; listing (web.1, v2) beside (web.1, v1) runs both. The
same with (web.1, v1 generation 0) and (web.1, v1 generation 1).
An at_most_once id never runs two copies: listed at two (release, generation)s (the scheduler
never sends that), only the highest runs.

A one-shot run that has ended (SUCCEEDED or FAILED) is left alone by fence(): it holds no
process, and removing it would make it run again when the list comes back.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agent import handover
from agent.adopted import UNKNOWN, AdoptedChild, running
from agent.clock import Clock
from agent.events import Exited
from agent.health import probe
from agent.launcher import Launcher
from agent.lifecycle import InstanceState
from agent.logs import LogSink
from agent.ports import PortPool
from agent.runner import InstanceRunner, Prober
from proto import formation_pb2 as pb

log = logging.getLogger("agent")

Key = tuple[str, str, int, int]  # (app, instance id, release, generation): one copy
ENDED = (InstanceState.SUCCEEDED, InstanceState.FAILED)  # an ended one-shot run's states


def key_of(spec: pb.Assignment) -> Key:
    return spec.app, spec.id, spec.release, spec.generation


def _copy(key: Key) -> str:
    """How logs name a copy: v7, or v7.g2 for the second restart of it at release 7."""
    return f"v{key[2]}" + (f".g{key[3]}" if key[3] else "")


def _same_spec(a: pb.Assignment, b: pb.Assignment) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def wanted(items: Iterable[pb.Assignment]) -> dict[Key, pb.Assignment]:
    """The list by key, with only the highest (release, generation) of an at_most_once id
    listed at more than one (logged): two copies of it must never run."""
    by_key = {key_of(a): a for a in items}
    highest: dict[tuple[str, str], tuple[int, int]] = {}
    once: set[tuple[str, str]] = set()  # ids of which some listed copy is at_most_once
    for key, spec in by_key.items():
        highest[key[:2]] = max(key[2:], highest.get(key[:2], key[2:]))
        if spec.at_most_once:
            once.add(key[:2])
    dropped = sorted(key for key in by_key if key[:2] in once and key[2:] != highest[key[:2]])
    if dropped:
        log.warning("at_most_once instances listed at more than one release; running only "
                    "the highest: %s", ", ".join(f"{key[0]}/{key[1]} {_copy(key)}"
                                                  for key in dropped))
    for key in dropped:
        del by_key[key]
    return by_key


class Supervisor:
    """All of the agent's runners, keyed by (app, instance id, release, generation)."""

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
        self.stopping: dict[Key, asyncio.Task] = {}  # the last stop of each key, until done
        self.leaving: set[InstanceRunner] = set()  # runners being stopped (for metrics)

    def statuses(self) -> list[pb.InstanceStatus]:
        return [r.status() for r in self.runners.values()]

    def _report(self, status: pb.InstanceStatus) -> None:
        self.on_status(status)  # looked up now: the link sets on_status after we are made

    def apply(self, items: list[pb.Assignment]) -> None:
        want = wanted(items)
        for key, runner in list(self.runners.items()):
            spec = want.get(key)
            # A one-shot run keeps its first spec: replacing it would run it again.
            if spec is None or not (runner.spec.oneshot or _same_spec(spec, runner.spec)):
                self._stop(key)
        for key, spec in want.items():
            if key not in self.runners:
                self._start(spec)

    def _start(self, spec: pb.Assignment) -> None:
        runner = InstanceRunner(spec, self.ports, self.launcher, self.sink, self._report,
                                self.workdir, self.base_env, self.wait_contact, self.clock,
                                self.prober)
        self.runners[key_of(spec)] = runner
        runner.start(after=self._stops_of(spec.app, spec.id))

    def _stops_of(self, app: str, iid: str) -> asyncio.Task | None:
        """What a new copy of (app, iid) waits for: the stops, of every copy, under way."""
        stops = [t for key, t in self.stopping.items() if key[:2] == (app, iid)]
        if len(stops) <= 1:
            return stops[0] if stops else None
        return asyncio.create_task(asyncio.wait(stops), name=f"stops of {iid}")

    def _in_use(self, app: str, iid: str) -> bool:
        """Is a copy of (app, iid), any (release, generation), running or being stopped?"""
        return any(k[:2] == (app, iid) for k in (*self.runners, *self.stopping))

    def fence(self, grace: float) -> list[str]:
        """Stop every at_most_once instance within grace seconds; return their ids. An ended
        one-shot run stays: nothing to stop, and removing it would make it run again."""
        fenced = [key for key, r in self.runners.items()
                  if r.spec.at_most_once and r.state not in ENDED]
        for key in fenced:
            self._stop(key, min(grace, self.runners[key].spec.stop_timeout))
        return sorted({key[1] for key in fenced})

    def _stop(self, key: Key, timeout: float | None = None) -> None:
        runner = self.runners.pop(key)
        previous = self.stopping.get(key)
        self.leaving.add(runner)

        async def stop() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])  # over, however it ended
                await runner.stop(timeout)
            finally:  # even if it failed: stop_all waits until nothing is listed
                self.leaving.discard(runner)
                if self.stopping.get(key) is task:
                    del self.stopping[key]
                    # Both copies write to one buffer, web.3's: it goes with the last of them.
                    # (A one-shot run's stays a while: its output is read after it ended.)
                    if not self._in_use(key[0], key[1]):
                        let_go = self.sink.retire if runner.spec.oneshot else self.sink.forget
                        let_go(key[0], key[1])

        task = asyncio.create_task(stop(), name=f"stop {key[1]} {_copy(key)}")
        self.stopping[key] = task

    # ---- an agent upgrade (agent/upgrade.py, agent/handover.py) -----------------------------

    def settled(self) -> bool:
        """No stop under way, every runner settled, and every live leader the machines know
        still running: an exit the child watcher took (or is about to) but the machine has
        not yet heard of would be lost across the exec."""
        return not self.stopping and all(
            r.settled() and (not r.machine.leader or running(r.machine.leader))
            for r in self.runners.values())

    def handover(self) -> list[dict[str, Any]]:
        return [r.handover() for r in self.runners.values()]

    async def adopt(self, states: list[dict[str, Any]]) -> None:
        """Take over the runners of the image before the exec, live leaders included."""
        for state in states:  # every handed-over port is taken before any runner may ask
            port = int(state["machine"].get("port", 0))
            if port in self.ports.ports:
                self.ports.used.add(port)
        for state in states:
            spec = pb.Assignment.FromString(handover.unb64(state["spec"]))
            leader, child = int(state["machine"].get("leader", 0)), None
            if leader > 0:
                try:
                    child = AdoptedChild(leader, int(state["stdout"]),
                                         handover.unb64(state["unread"]))
                    await child.attach()
                except ProcessLookupError:  # reaped before the exec: it exited, status unknown
                    log.warning("%s: pid %d was gone at the upgrade", spec.id, leader)
                    child = None
            runner = InstanceRunner(spec, self.ports, self.launcher, self.sink, self._report,
                                    self.workdir, self.base_env, self.wait_contact, self.clock,
                                    self.prober)
            self.runners[key_of(spec)] = runner
            runner.adopt(state, child)
            if leader > 0 and child is None:
                runner.feed(Exited(UNKNOWN, leader))

    async def stop_all(self) -> None:
        """Stop every instance, concurrently; used at agent shutdown."""
        for key in list(self.runners):
            self._stop(key)
        while self.stopping:
            await asyncio.gather(*self.stopping.values(), return_exceptions=True)
