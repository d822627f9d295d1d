"""The runner and supervisor against a fake launcher: scripted exits, spawn errors, signals.
No processes, no network."""
from __future__ import annotations

import asyncio
import io
import signal

from agent.launcher import shell_argv
from agent.lifecycle import InstanceState
from agent.logs import LogSink
from agent.ports import PortPool
from agent.supervisor import Supervisor
from proto import formation_pb2 as pb


class FakeChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdout = None
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self.exit)

    def close(self) -> None:
        pass


class FakeLauncher:
    """Spawns FakeChild objects; SIGTERM ends one unless it is stubborn; SIGKILL always does."""

    def __init__(self, fail_spawns: int = 0, stubborn: bool = False) -> None:
        self.children: list[FakeChild] = []
        self.signals: list[tuple[int, int]] = []
        self.fail_spawns = fail_spawns
        self.stubborn = stubborn

    async def spawn(self, argv, env, cwd, at_most_once=False):
        if self.fail_spawns:
            self.fail_spawns -= 1
            raise OSError(11, "Resource temporarily unavailable")
        child = FakeChild(1000 + len(self.children))
        self.children.append(child)
        return child

    def kill_group(self, pgid: int, sig: int) -> None:
        self.signals.append((pgid, sig))
        for c in self.children:
            if c.pid == pgid and not c.exit.done() and (sig == signal.SIGKILL or not self.stubborn):
                c.exit.set_result(-sig)

    def forget_group(self, pgid: int) -> None:
        pass


def spec(iid: str = "worker.1", release: int = 1, stop_timeout: float = 0.2) -> pb.Assignment:
    return pb.Assignment(app="app", id=iid, type=iid.split(".")[0], release=release,
                         command="sleep 1", stop_timeout=stop_timeout)


def make(launcher: FakeLauncher) -> tuple[Supervisor, list[pb.InstanceStatus]]:
    seen: list[pb.InstanceStatus] = []
    sup = Supervisor(launcher, LogSink(io.BytesIO()), PortPool(range(7000, 7010),
                     probe=lambda p: True), "/", {}, seen.append)
    return sup, seen


async def until(condition, timeout: float = 5.0) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def test_crash_is_restarted_at_once_then_with_backoff():
    launcher = FakeLauncher()
    sup, seen = make(launcher)
    sup.apply([spec()])
    await until(lambda: len(launcher.children) == 1)
    launcher.children[0].exit.set_result(1)
    await until(lambda: len(launcher.children) == 2)  # first restart: at once
    runner = sup.runners[("app", "worker.1")]
    assert runner.restarts == 1 and runner.state == InstanceState.RUNNING
    assert any(s.state == InstanceState.CRASHED and s.reason == "exited with code 1" for s in seen)
    launcher.children[1].exit.set_result(-9)
    await until(lambda: runner.state == InstanceState.CRASHED)
    assert runner.reason == "killed by SIGKILL" and len(launcher.children) == 2  # backing off
    await until(lambda: len(launcher.children) == 3)  # after 0.5 s
    await sup.stop_all()


async def test_spawn_failure_is_reported_and_retried():
    launcher = FakeLauncher(fail_spawns=1)
    sup, seen = make(launcher)
    sup.apply([spec()])
    await until(lambda: len(launcher.children) == 1)
    assert any(s.state == InstanceState.CRASHED and "could not start" in s.reason for s in seen)
    await sup.stop_all()


async def test_no_free_port_is_reported_and_retried_with_backoff_until_one_frees():
    launcher = FakeLauncher()
    free = [False]
    seen: list[pb.InstanceStatus] = []
    sup = Supervisor(launcher, LogSink(io.BytesIO()), PortPool(range(7000, 7001),
                     probe=lambda p: free[0]), "/", {}, seen.append)
    sup.apply([spec()])
    await until(lambda: any(s.reason == "no free port in 7000-7000" for s in seen))
    assert seen[-1].state == InstanceState.CRASHED and not launcher.children
    free[0] = True  # another process let go of it
    await until(lambda: len(launcher.children) == 1)
    assert sup.runners[("app", "worker.1")].status().port == 7000
    await sup.stop_all()


async def test_stop_sends_sigterm_then_sigkill_after_stop_timeout():
    launcher = FakeLauncher(stubborn=True)
    sup, seen = make(launcher)
    sup.apply([spec(stop_timeout=0.1)])
    await until(lambda: launcher.children)
    sup.apply([])
    await until(lambda: not sup.stopping)
    pid = launcher.children[0].pid
    assert launcher.signals[:2] == [(pid, signal.SIGTERM), (pid, signal.SIGKILL)]
    assert seen[-1].state == InstanceState.STOPPED and not sup.runners


async def test_same_list_twice_changes_nothing_and_new_release_replaces():
    launcher = FakeLauncher()
    sup, _ = make(launcher)
    sup.apply([spec()])
    await until(lambda: launcher.children)
    sup.apply([spec()])
    await asyncio.sleep(0.05)
    assert len(launcher.children) == 1 and not launcher.signals
    sup.apply([spec(release=2)])
    await until(lambda: len(launcher.children) == 2)
    assert launcher.children[0].exit.done()  # the old one was stopped before the new started
    assert sup.runners[("app", "worker.1")].spec.release == 2
    await sup.stop_all()


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
