"""Cluster: etcd, a scheduler and N agents as real processes on loopback, torn down for sure.

Every process the cluster starts carries FTEST_RUN=<run id> in its environment, and so does
every instance and every child of one: teardown finds them all in /proc and reports leaks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, TypeVar

from ctl.client import Client
from ctl.localcluster import Launch, Part, free_port, wait_port
from tests.cluster import procs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             what: str = "") -> T:
    """Poll condition until it returns something truthy; raise Timeout after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except Exception as e:  # noqa: BLE001 - a failing probe is "not yet"
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or condition}: {last!r}")
        time.sleep(interval)


class Cluster:
    """A whole Formation cluster on this machine. Use as a context manager."""

    def __init__(self, agents: int = 2, capacity: int = 20, agent_ttl: float = 10.0,
                 etcd: str | None = None, workdir: str = EXAMPLES) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix=f"formation-test-{self.run_id}-")
        self.n_agents = agents
        self.capacity = capacity
        self.agent_ttl = agent_ttl
        self.workdir = workdir
        self.prefix = f"/formation-{self.run_id}"
        self.shared_etcd = etcd
        self.etcd_url = etcd or ""
        self.parts: dict[str, Part] = {}
        self.launch = Launch(stdout=self._logfile, env={"FTEST_RUN": self.run_id})
        self.listen = ""
        self._client: Client | None = None
        self._agent_ports: dict[str, str] = {}

    # ---- life -----------------------------------------------------------------

    def _logfile(self, name: str):
        return open(os.path.join(self.tmp, f"{name}.log"), "a")

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if not self.shared_etcd:
            self.start_etcd()
        self.listen = f"127.0.0.1:{free_port()}"
        self.start_scheduler()
        for i in range(1, self.n_agents + 1):
            self.start_agent(f"agent-{i}")
        wait_for(lambda: sum(a.connected for a in self.client.agents()) == self.n_agents,
                 15, what="agents to connect")

    def start_etcd(self) -> None:
        port, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{port}"
        part = self.launch.etcd(os.path.join(self.tmp, "etcd-data"), "127.0.0.1", port, peer)
        self.parts["etcd"] = part
        wait_port("127.0.0.1", port, 20, part.proc)

    def start_scheduler(self) -> Part:
        part = self.launch.scheduler(self.etcd_url, self.listen, agent_ttl=self.agent_ttl,
                                     prefix=self.prefix)
        self.parts["scheduler"] = part
        wait_port("127.0.0.1", int(self.listen.rsplit(":", 1)[1]), 20, part.proc)
        return part

    def stop_scheduler(self, sig: int = signal.SIGTERM) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        return self.parts.pop("scheduler").stop(sig)

    def restart_scheduler(self, sig: int = signal.SIGTERM) -> None:
        """Stop (or kill) the scheduler, start it again on the same address, wait for agents."""
        self.stop_scheduler(sig)
        self.start_scheduler()
        wait_for(lambda: sum(a.connected for a in self.client.agents()) ==
                 sum(1 for n in self.parts if n.startswith("agent")), 20,
                 what="agents to reconnect")

    def start_agent(self, name: str, capacity: int | None = None) -> Part:
        if name not in self._agent_ports:
            lo = free_port()  # a base the OS just handed out is very likely free around it
            lo = max(1024, min(lo, 65000))
            self._agent_ports[name] = f"{lo}-{lo + 199}"
        part = self.launch.agent(name, self.listen, capacity or self.capacity,
                                 self._agent_ports[name], self.workdir, advertise="127.0.0.1")
        self.parts[name] = part
        return part

    def close(self) -> None:
        """Stop everything; fail loudly if any process of this run is left."""
        if self._client is not None:
            self._client.close()
        for name in [n for n in self.parts if n.startswith("agent")]:
            self.parts.pop(name).stop(timeout=20)
        for name in ("scheduler", "etcd"):
            if name in self.parts:
                self.parts.pop(name).stop()
        leaked = procs.with_env("FTEST_RUN", self.run_id)
        for pid in leaked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.environ.get("FTEST_KEEP_LOGS") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if leaked:
            raise AssertionError(f"processes of test run {self.run_id} leaked: {leaked}")

    # ---- using it ----------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.listen, timeout=5)
        return self._client

    def ctl(self, *args: str, check: bool = True, app: str = "default",
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the real `ctl` CLI against this cluster."""
        env = {**os.environ, "FORMATION_SCHEDULER": self.listen, "FORMATION_APP": app}
        result = subprocess.run([sys.executable, "-m", "ctl", *args], capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ctl {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    def ps(self, app: str = "default") -> list[dict]:
        return json.loads(self.ctl("ps", "--json", app=app).stdout)

    def instances(self, app: str = "default") -> dict[str, Any]:
        """id -> Instance message, read through the API (fast, in-process)."""
        return {i.id: i for i in self.client.instances(app)}

    def running(self, app: str = "default") -> dict[str, Any]:
        """id -> Instance of those reported running whose pid really exists."""
        return {i: inst for i, inst in self.instances(app).items()
                if inst.state == "running" and procs.alive(inst.pid)}

    def wait_running(self, ids: set[str], timeout: float = 15, app: str = "default"):
        """Wait until exactly `ids` are listed, all running with live pids."""
        def ok():
            listed = self.instances(app)
            run = self.running(app)
            return (run,) if set(listed) == ids and set(run) == ids else None
        return wait_for(ok, timeout, what=f"exactly {sorted(ids)} running")[0]

    def instance_pids(self) -> list[int]:
        """Every live process of this run that is an instance or a child of one."""
        return [p for p in procs.with_env("FTEST_RUN", self.run_id)
                if "FORMATION_INSTANCE" in procs.environ(p)]

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.tmp, f"{name}.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""
