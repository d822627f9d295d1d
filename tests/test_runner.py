"""The runner and supervisor against a fake launcher and a fake clock: scripted exits, spawn
errors, signals, exec checks, all on one timeline of fake seconds. No processes, no network.

Timings are checked on the fake clock (exact restart delays, SIGKILL exactly stop_timeout after
SIGTERM) and order on the launcher's timeline (a new copy never spawned before the old one
exited). settle() only lets the event loop run what is ready; time moves by advance() alone."""
from __future__ import annotations

import asyncio
import io
import signal

import pytest

from agent.launcher import shell_argv
from agent.lifecycle import InstanceState
from agent.logs import LogSink
from agent.ports import PortPool
from agent.supervisor import Supervisor
from proto import formation_pb2 as pb


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


class FakeTimer:
    def __init__(self, when: float, callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time stands still until advance() moves it, firing timers in order on the way."""

    def __init__(self) -> None:
        self.t = 0.0
        self.timers: list[FakeTimer] = []

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback) -> FakeTimer:
        timer = FakeTimer(self.t + delay, callback)
        self.timers.append(timer)
        return timer

    async def advance(self, seconds: float) -> None:
        target = self.t + seconds
        await settle()
        while due := [t for t in self.timers if not t.cancelled and t.when <= target + 1e-9]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.t = max(self.t, timer.when)
            timer.callback()
            await settle()
        self.t = target


class FakeChild:
    def __init__(self, pid: int, launcher: FakeLauncher) -> None:
        self.pid = pid
        self.stdout = None
        self.launcher = launcher
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finish(self, code: int) -> None:
        if not self.exit.done():
            self.launcher.timeline.append((self.launcher.clock.t, "exit", self.pid, code))
            self.exit.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self.exit)

    def close(self) -> None:
        pass


class FakeLauncher:
    """Spawns FakeChild objects; SIGTERM ends one unless it is stubborn; SIGKILL always does.
    Exec checks (capture=False) exit at once with the next of check_codes (0 when none)."""

    def __init__(self, clock: FakeClock, fail_spawns: int = 0, stubborn: bool = False) -> None:
        self.clock = clock
        self.children: list[FakeChild] = []
        self.checks: list[list[str]] = []
        self.check_codes: list[int] = []
        self.timeline: list[tuple] = []  # (time, "spawn" | "exit" | "signal", pid, ...)
        self.fail_spawns = fail_spawns
        self.stubborn = stubborn
        self.forgotten: list[int] = []

    async def spawn(self, argv, env, cwd, at_most_once=False, capture=True, name=""):
        if not capture:
            self.checks.append(argv)
            check = FakeChild(9000 + len(self.checks), self)
            check.exit.set_result(self.check_codes.pop(0) if self.check_codes else 0)
            return check
        if self.fail_spawns:
            self.fail_spawns -= 1
            raise OSError(11, "Resource temporarily unavailable")
        child = FakeChild(1000 + len(self.children), self)
        self.children.append(child)
        self.timeline.append((self.clock.t, "spawn", child.pid, env["PORT"]))
        return child

    def kill_group(self, pgid: int, sig: int) -> None:
        if pgid >= 9000:
            return  # an exec check's group
        self.timeline.append((self.clock.t, "signal", pgid, sig))
        for c in self.children:
            if c.pid == pgid and (sig == signal.SIGKILL or not self.stubborn):
                c.finish(-sig)

    def forget_group(self, pgid: int) -> None:
        self.forgotten.append(pgid)

    async def gone(self, pgid: int, timeout: float) -> bool:
        return True

    def cgroup_of(self, pgid: int) -> str | None:
        return None

    def times(self, kind: str) -> list[float]:
        return [e[0] for e in self.timeline if e[1] == kind]

    def signals(self) -> list[tuple[float, int, int]]:
        return [(t, pid, sig) for t, kind, pid, sig in
                (e[:4] for e in self.timeline if e[1] == "signal")]


def spec(iid: str = "worker.1", release: int = 1, stop_timeout: float = 0.2,
         **kw) -> pb.Assignment:
    return pb.Assignment(app="app", id=iid, type=iid.split(".")[0], release=release,
                         command="sleep 1", stop_timeout=stop_timeout, **kw)


def make(launcher: FakeLauncher, ports: range = range(7000, 7010), probe=lambda p: True
         ) -> tuple[Supervisor, list[pb.InstanceStatus]]:
    seen: list[pb.InstanceStatus] = []
    sup = Supervisor(launcher, LogSink(io.BytesIO()), PortPool(ports, probe=probe), "/", {},
                     seen.append, clock=launcher.clock)
    return sup, seen


async def stop_all(sup: Supervisor, clock: FakeClock) -> None:
    stopping = asyncio.create_task(sup.stop_all())
    while not stopping.done():
        await clock.advance(1)
    await stopping


async def test_restart_delays_are_0_then_half_a_second_doubling_to_30_reset_after_60s_up():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, seen = make(launcher)
    sup.apply([spec()])
    await settle()
    assert launcher.times("spawn") == [0]
    expected = [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    for delay in expected:
        await clock.advance(1)  # up for a second, then it crashes
        launcher.children[-1].finish(1)
        await clock.advance(delay)
    await clock.advance(60)  # up a minute: the next restart is at once again
    launcher.children[-1].finish(1)
    await settle()
    spawns, exits = launcher.times("spawn"), launcher.times("exit")
    assert [s - e for s, e in zip(spawns[1:], exits, strict=True)] == pytest.approx(expected + [0])
    runner = sup.runners[("app", "worker.1", 1, 0)]
    assert runner.restarts == 10 and runner.state == InstanceState.RUNNING
    assert any(s.state == InstanceState.CRASHED and s.reason == "exited with code 1"
               for s in seen)
    await stop_all(sup, clock)


async def test_leader_exit_sigkills_the_rest_of_its_group_before_the_restart():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, seen = make(launcher)
    sup.apply([spec()])
    await settle()
    first = launcher.children[0]
    first.finish(-9)  # the shell leader died; its children may live on in the group
    await settle()
    kinds = [e[1:] for e in launcher.timeline]
    assert kinds[:4] == [("spawn", first.pid, "7000"), ("exit", first.pid, -9),
                         ("signal", first.pid, signal.SIGKILL), ("spawn", 1001, "7000")]
    assert first.pid in launcher.forgotten
    assert [s.reason for s in seen if s.state == InstanceState.CRASHED] == ["killed by SIGKILL"]
    await stop_all(sup, clock)


async def test_spawn_failure_is_reported_and_retried():
    clock = FakeClock()
    launcher = FakeLauncher(clock, fail_spawns=2)
    sup, seen = make(launcher)
    sup.apply([spec()])
    await clock.advance(0.49)
    assert not launcher.children  # failed at once, then at once again: now 0.5 s of backoff
    await clock.advance(0.01)
    assert launcher.times("spawn") == [0.5]
    assert any(s.state == InstanceState.CRASHED and "could not start" in s.reason for s in seen)
    await stop_all(sup, clock)


async def test_no_free_port_is_reported_and_retried_with_backoff_until_one_frees():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    free = [False]
    sup, seen = make(launcher, range(7000, 7001), probe=lambda p: free[0])
    sup.apply([spec()])
    await clock.advance(10)
    assert seen[-1].state == InstanceState.CRASHED and not launcher.children
    assert seen[-1].reason == "no free port in 7000-7000"
    tries = sum(1 for s in seen if s.reason == "no free port in 7000-7000")
    assert tries == 6  # at 0, 0 (at once), 0.5, 1.5, 3.5, 7.5; the next at 7.5 + 8 = 15.5
    free[0] = True  # another process let go of it
    await clock.advance(5.49)
    assert not launcher.children
    await clock.advance(0.01)
    assert launcher.times("spawn") == [15.5]
    assert sup.runners[("app", "worker.1", 1, 0)].status().port == 7000
    await stop_all(sup, clock)


async def test_stop_sends_sigterm_then_sigkill_exactly_stop_timeout_later():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, seen = make(launcher)
    sup.apply([spec(stop_timeout=3)])
    await clock.advance(1)
    sup.apply([])
    await clock.advance(2.999)
    pid = launcher.children[0].pid
    assert launcher.signals() == [(1, pid, signal.SIGTERM)]
    assert seen[-1].state == InstanceState.STOPPING
    await clock.advance(0.001)
    assert launcher.signals()[1] == (4, pid, signal.SIGKILL)
    await settle()
    assert not sup.stopping and not sup.runners
    assert seen[-1].state == InstanceState.STOPPED
    assert sup.ports.used == set()


async def test_a_sigterm_that_works_needs_no_sigkill_but_the_group_is_still_cleared():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, seen = make(launcher)
    sup.apply([spec(stop_timeout=3)])
    await settle()
    sup.apply([])
    await clock.advance(10)
    pid = launcher.children[0].pid
    assert launcher.signals() == [(0, pid, signal.SIGTERM), (0, pid, signal.SIGKILL)]
    assert seen[-1].state == InstanceState.STOPPED and not sup.stopping


async def test_a_replaced_instance_is_stopped_before_its_new_copy_is_spawned():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, _ = make(launcher)
    sup.apply([spec(stop_timeout=5)])
    await clock.advance(1)
    sup.apply([spec(stop_timeout=5)])  # the same list twice changes nothing
    await clock.advance(1)
    assert len(launcher.children) == 1 and not launcher.signals()
    sup.apply([spec(release=2, stop_timeout=5)])
    await clock.advance(4.999)
    assert len(launcher.children) == 1  # the old one ignores SIGTERM, and still runs
    await clock.advance(0.001)
    old, new = launcher.children
    events = [e[1:3] for e in launcher.timeline]
    assert events.index(("exit", old.pid)) < events.index(("spawn", new.pid))
    assert launcher.times("spawn") == [0, 7]
    assert list(sup.runners) == [("app", "worker.1", 2, 0)]
    await stop_all(sup, clock)


async def test_a_new_copy_waits_for_every_copy_of_its_id_being_stopped():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, _ = make(launcher)
    sup.apply([spec(release=1, stop_timeout=3), spec(release=2, stop_timeout=5)])
    await clock.advance(1)
    assert len(launcher.children) == 2  # a surge: both copies run
    sup.apply([spec(release=3, stop_timeout=5)])  # both retired at once, for a third
    await clock.advance(4.999)
    assert launcher.times("exit") == [4] and len(launcher.children) == 2
    await clock.advance(0.001)
    assert launcher.times("exit") == [4, 6] and launcher.times("spawn") == [0, 0, 6]
    assert list(sup.runners) == [("app", "worker.1", 3, 0)]
    await stop_all(sup, clock)


async def test_a_fence_stops_at_most_once_instances_within_its_grace():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, _ = make(launcher)
    sup.apply([spec("clock.1", stop_timeout=10, at_most_once=True), spec("worker.1")])
    await settle()
    assert sup.fence(grace=2) == ["clock.1"]
    await clock.advance(2)
    fenced = launcher.children[0].pid
    assert launcher.signals()[:2] == [(0, fenced, signal.SIGTERM), (2, fenced, signal.SIGKILL)]
    await stop_all(sup, clock)


async def test_a_fence_leaves_an_ended_one_shot_run_in_place():
    """An at_most_once one-shot run that has ended holds no process: the fence stops only the
    one still running, and the ended one stays listed (removed, it would run again)."""
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, seen = make(launcher)
    done = spec("release.1", oneshot=True, at_most_once=True)
    live = spec("release.2", oneshot=True, at_most_once=True, stop_timeout=10)
    sup.apply([done, live])
    await settle()
    launcher.children[0].finish(0)
    await settle()
    ended = sup.runners[("app", "release.1", 1, 0)]
    assert ended.state == InstanceState.SUCCEEDED
    assert sup.fence(grace=2) == ["release.2"]
    await clock.advance(2)
    assert list(sup.runners) == [("app", "release.1", 1, 0)] and not sup.stopping
    assert sup.runners[("app", "release.1", 1, 0)] is ended
    fenced = launcher.children[1].pid
    assert [(t, sig) for t, pid, sig in launcher.signals() if pid == fenced][:2] == [
        (0, signal.SIGTERM), (2, signal.SIGKILL)]
    assert [(s.id, s.state, s.reason) for s in seen[-2:]] == [
        ("release.2", InstanceState.FAILED, "stopped before it finished"),
        ("release.2", InstanceState.STOPPED, "stopped before it finished")]  # it left
    sup.apply([done])  # the list again: the ended run does not run a second time
    await settle()
    assert len(launcher.children) == 2
    assert sup.runners[("app", "release.1", 1, 0)] is ended
    await stop_all(sup, clock)


async def test_an_at_most_once_id_in_several_copies_runs_only_the_highest_generation(caplog):
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, seen = make(launcher)
    copies = [spec("clock.1", release=r, generation=g, at_most_once=True)
              for r, g in ((1, 0), (1, 2), (1, 1), (0, 5))]
    sup.apply(copies)
    await settle()
    assert list(sup.runners) == [("app", "clock.1", 1, 2)] and len(launcher.children) == 1
    assert {(s.release, s.generation) for s in seen} == {(1, 2)}
    assert "app/clock.1 v0.g5, app/clock.1 v1, app/clock.1 v1.g1" in caplog.text
    await stop_all(sup, clock)


async def test_at_most_once_starts_only_in_contact():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, _ = make(launcher)
    contact = asyncio.Event()

    async def wait_contact() -> None:
        await contact.wait()
    sup.wait_contact = wait_contact
    sup.apply([spec(at_most_once=True)])
    await clock.advance(5)
    assert not launcher.children
    contact.set()
    await settle()
    assert launcher.times("spawn") == [5]
    await stop_all(sup, clock)


async def test_exec_checks_run_through_the_launcher_and_restart_after_failures():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, seen = make(launcher)
    health = pb.HealthCheck(type="exec", command="test -e ok", interval=1, grace=0, failures=2)
    sup.apply([spec(stop_timeout=3, health=health)])
    await clock.advance(0.02)
    assert launcher.checks == [["/bin/sh", "-c", "test -e ok"]]
    assert seen[-1].state == InstanceState.RUNNING
    launcher.check_codes = [1, 1]
    await clock.advance(1)
    assert seen[-1].state == InstanceState.UNHEALTHY
    assert seen[-1].reason == "exec check exited with code 1"
    await clock.advance(1)  # the second failure in a row: SIGTERM, then SIGKILL 3 s later
    pid = launcher.children[0].pid
    await clock.advance(3)
    assert launcher.signals()[:2] == [(2.02, pid, signal.SIGTERM), (5.02, pid, signal.SIGKILL)]
    assert launcher.times("spawn") == [0, pytest.approx(5.02)]
    crashed = [s for s in seen if s.state == InstanceState.CRASHED]
    assert crashed[0].reason == "health check failed 2 times: exec check exited with code 1"
    await stop_all(sup, clock)


async def test_an_ended_one_shot_run_stays_listed_until_the_list_drops_it():
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    sup, seen = make(launcher)
    health = pb.HealthCheck(type="exec", command="test -e ok", interval=1)
    run = spec("release.1", oneshot=True, health=health)
    sup.apply([run])
    await clock.advance(5)
    assert seen[-1].state == InstanceState.RUNNING and not launcher.checks  # no probe, ever
    launcher.children[0].finish(0)
    await clock.advance(60)
    ended = sup.statuses()
    assert [(s.id, s.state, s.reason, s.pid, s.port) for s in ended] == [
        ("release.1", InstanceState.SUCCEEDED, "exited 0", 0, 0)]  # what a hello says
    assert seen[-1] == ended[0] and sup.ports.used == set()
    sup.apply([run])  # the same list again: it runs once, all the same
    await clock.advance(60)
    assert len(launcher.children) == 1 and not launcher.checks and sup.statuses() == ended
    changed = spec("release.1", oneshot=True, health=health, stop_timeout=5)
    sup.apply([changed])  # even with another spec (a newer scheduler's): kept, not run again
    await clock.advance(60)
    assert len(launcher.children) == 1 and sup.statuses() == ended
    reported = len(seen)
    sup.apply([])
    await settle()
    assert not sup.runners and not sup.stopping and len(seen) == reported + 1
    assert (seen[-1].state, seen[-1].reason) == (InstanceState.STOPPED, "exited 0")  # it left


async def test_a_one_shot_run_over_its_timeout_gets_sigterm_then_sigkill_and_fails():
    clock = FakeClock()
    launcher = FakeLauncher(clock, stubborn=True)
    sup, seen = make(launcher)
    sup.apply([spec("release.1", stop_timeout=3, oneshot=True, timeout=10)])
    await clock.advance(20)
    pid = launcher.children[0].pid
    assert launcher.signals()[:2] == [(10, pid, signal.SIGTERM), (13, pid, signal.SIGKILL)]
    assert [(s.state, s.reason) for s in seen][-2:] == [
        (InstanceState.STOPPING, "timed out after 10 s"),
        (InstanceState.FAILED, "timed out after 10 s")]
    assert len(launcher.children) == 1 and sup.ports.used == set()
    await stop_all(sup, clock)


def test_commands_run_without_a_shell_when_they_need_none():
    assert shell_argv("python3 web.py --x=1") == ["python3", "web.py", "--x=1"]
    assert shell_argv("echo $PORT") == ["/bin/sh", "-c", "exec echo $PORT"]
    assert shell_argv("grep 'a b' f") == ["/bin/sh", "-c", "exec grep 'a b' f"]
    assert shell_argv("ls *.py > out") == ["/bin/sh", "-c", "exec ls *.py > out"]
    for compound in ("a && b", "a | b", "a; b", "(a)", "FOO=1 a", "a $(b)"):
        assert shell_argv(compound) == ["/bin/sh", "-c", compound]


async def test_a_socket_connected_to_itself_is_not_a_server():
    # What the kernel may do by chance when a probe's source port equals the probed port.
    from agent.health import _self_connected
    from ctl.localcluster import free_port
    port = free_port()
    _, writer = await asyncio.open_connection("127.0.0.1", port,
                                              local_addr=("127.0.0.1", port))
    try:
        assert _self_connected(writer)
    finally:
        writer.close()
