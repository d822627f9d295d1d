"""The process managers under test, behind one small interface: open, scale(n), the pids of
the manager itself, close. Children are found by the bench in /proc, never by asking them."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import xmlrpc.client
from pathlib import Path
from typing import Any

from ctl.localcluster import _die_with_parent
from tests.cluster import Cluster, wait_for

CHILD = str(Path(__file__).with_name("child.py"))
VENV_BIN = Path(sys.executable).parent


class Kind:
    """What the children are: `sleep` or a trivial Python program; how to see them run."""

    def __init__(self, kind: str, tmp: Path, token: int) -> None:
        self.kind = kind
        self.marks = tmp / f"marks-{token}"
        self.marks.mkdir(parents=True, exist_ok=True)
        if kind == "sleep":
            self.argv = ["sleep", f"100000.{token}"]
        else:
            self.argv = [sys.executable, CHILD, str(self.marks)]
        self.prefix = b"\0".join(a.encode() for a in self.argv) + b"\0"

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def reset(self) -> None:
        for f in self.marks.iterdir():
            f.unlink()

    def running(self, pids: set[int]) -> set[int]:
        """Of these child pids, those that have started the target: for sleep, being in /proc
        with its command line; for Python, having written its marker."""
        if self.kind == "sleep":
            return pids
        return {p for p in pids if (self.marks / str(p)).exists()}


class Manager:
    name = ""

    def __init__(self, kind: Kind, n: int, tmp: Path) -> None:
        self.kind, self.n, self.tmp = kind, n, tmp

    def open(self) -> None: ...
    def scale(self, n: int) -> None: ...
    def pids(self) -> list[int]:
        raise NotImplementedError

    def close(self) -> None: ...

    def settle(self) -> None:
        """Wait until the manager itself considers everything stopped (between rounds)."""


class Floor(Manager):
    name = "floor (bare asyncio)"

    def open(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor", *self.kind.argv],
                                     stdin=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent)

    def scale(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"scale {n}\n".encode())
        self.proc.stdin.flush()

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


class Supervisord(Manager):
    name = "supervisord"

    def open(self) -> None:
        d = self.tmp / "supervisord"
        d.mkdir(exist_ok=True)
        self.sock = d / "s.sock"
        conf = d / "supervisord.conf"
        conf.write_text(textwrap.dedent(f"""\
            [unix_http_server]
            file={self.sock}
            [supervisord]
            logfile={d}/supervisord.log
            pidfile={d}/supervisord.pid
            nodaemon=true
            childlogdir={d}
            minfds=4096
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [program:c]
            command={self.kind.command}
            numprocs={self.n}
            process_name=%(program_name)s_%(process_num)03d
            autostart=false
            autorestart=true
            startsecs=0
            startretries=1000
            stdout_logfile=/dev/null
            stderr_logfile=/dev/null
            """))
        self.proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-c", str(conf)],
                                     start_new_session=True, preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL)
        wait_for(lambda: self.rpc().supervisor.getState()["statename"] == "RUNNING", 20)

    def rpc(self) -> Any:  # an xmlrpc proxy: its answers are whatever supervisord sends
        from supervisor.xmlrpc import SupervisorTransport
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}"))

    def scale(self, n: int) -> None:
        if n:
            self.rpc().supervisor.startProcessGroup("c", False)
        else:
            self.rpc().supervisor.stopProcessGroup("c", False)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def settle(self) -> None:
        wait_for(lambda: all(p["statename"] in ("STOPPED", "EXITED")
                             for p in self.rpc().supervisor.getAllProcessInfo()), 60)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class Circus(Manager):
    def __init__(self, kind: Kind, n: int, tmp: Path, check_delay: float | None) -> None:
        super().__init__(kind, n, tmp)
        self.check_delay = check_delay
        self.name = "circus" + (f" (check_delay {check_delay:g})" if check_delay else
                                " (default check_delay)")

    def open(self) -> None:
        d = self.tmp / f"circus-{self.check_delay}"
        d.mkdir(exist_ok=True)
        self.endpoint = f"ipc://{d}/ctrl.sock"
        delay = f"check_delay = {self.check_delay}\n" if self.check_delay else ""
        conf = d / "circus.ini"
        cmd, *args = self.kind.argv
        conf.write_text(f"[circus]\n{delay}endpoint = {self.endpoint}\n"
                        f"pubsub_endpoint = ipc://{d}/pub.sock\nstatsd = False\n"
                        f"[watcher:c]\ncmd = {cmd}\nargs = {' '.join(args)}\n"
                        f"numprocesses = {self.n}\nautostart = False\nwarmup_delay = 0\n"
                        f"respawn = True\n"
                        f"copy_env = True\nstop_signal = TERM\ngraceful_timeout = 10\n")
        self.proc = subprocess.Popen([str(VENV_BIN / "circusd"), str(conf)],
                                     start_new_session=True, preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        from circus.client import CircusClient
        self.client = CircusClient(endpoint=self.endpoint, timeout=30)
        wait_for(lambda: self.client.call({"command": "status"}).get("status") == "ok", 20)

    def scale(self, n: int) -> None:
        self.client.call({"command": "start" if n else "stop", "properties": {"name": "c"}})

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def settle(self) -> None:
        wait_for(lambda: self.client.call({"command": "status", "properties": {"name": "c"}})
                 .get("status") == "stopped", 60, interval=0.1)

    def close(self) -> None:
        try:
            self.client.call({"command": "quit", "properties": {"waiting": False}})
        except Exception:  # noqa: BLE001 - it may never have answered: signal it instead
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Formation(Manager):
    def __init__(self, kind: Kind, n: int, tmp: Path, agents: int = 1,
                 isolation: str = "") -> None:
        super().__init__(kind, n, tmp)
        self.agents = agents
        self.isolation = isolation  # "" : the agent's default (a cgroup v2 per instance)
        self.name = f"Formation ({agents} agent{'s' if agents > 1 else ''}" + \
            (f", {isolation} isolation)" if isolation else ")")

    def open(self) -> None:
        d = self.tmp / f"formation-{self.agents}{self.isolation}"
        d.mkdir(exist_ok=True)
        (d / "Procfile").write_text(f"c: {self.kind.command}\n")
        (d / "formation.toml").write_text("[c]\nstop_timeout = 10\n")
        env = {"FORMATION_ISOLATION": self.isolation} if self.isolation else {}
        self.cluster = Cluster(agents=self.agents, capacity=self.n, mode="local",
                               workdir=str(d), agent_env=env)
        try:
            self.cluster.start()
        except BaseException:
            self.cluster.close()
            raise
        self.cluster.ctl("deploy", str(d / "Procfile"))

    def scale(self, n: int) -> None:
        self.cluster.client.scale("default", {"c": n})

    def pids(self) -> list[int]:
        return [p.pid for name, p in self.cluster.parts.items()
                if name.startswith("agent") or name == "scheduler"]

    def settle(self) -> None:
        wait_for(lambda: not self.cluster.client.instances("default"), 60)

    def agent_pids(self) -> list[int]:
        return [p.pid for name, p in self.cluster.parts.items() if name.startswith("agent")]

    def close(self) -> None:
        self.cluster.close()


