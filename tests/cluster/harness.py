"""Cluster: etcd, a scheduler and N agents as real processes, on hosts of their own, torn down
for sure.

Modes:
  local     everything on 127.0.0.1 (fast; can share one etcd between clusters by prefix)
  netns     one network namespace per host on a bridge (tests/cluster/network.py)
  loopback  one loopback address per host (127.0.0.2, …): the fallback where namespaces can't be
            made; cutting a host off is not possible there

Every connection is mutual TLS (a throwaway CA in the run's directory), unless a test asks for
`tls=False`: then the parts run plaintext, with --insecure where a host is not loopback.

Every process the cluster starts carries FTEST_RUN=<run id> in its environment, and so does
every instance and every child of one: teardown finds them in /proc and reports leaks.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from common.states import InstanceState
from common.tls import TlsPaths, load, target
from ctl.client import Client
from ctl.devcerts import DevCerts
from ctl.localcluster import Launch, Part, etcd_binary, free_port, wait_port
from tests.cluster import procs
from tests.cluster.network import Host, Network, namespaces_possible

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
T = TypeVar("T")
CONTROL = "control"


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


def default_mode() -> str:
    """netns where namespaces can be made, else loopback; FTEST_MODE overrides."""
    forced = os.environ.get("FTEST_MODE")
    if forced:
        return forced
    return "netns" if namespaces_possible() else "loopback"


class Cluster:
    """A whole Formation cluster on this machine. Use as a context manager."""

    def __init__(self, agents: int = 2, capacity: int = 20, agent_ttl: float = 10.0,
                 etcd: str | None = None, workdir: str = EXAMPLES, mode: str = "local",
                 etcd_members: int = 1, scheduler_args: Sequence[str] = (),
                 spare_hosts: int = 0, agent_env: dict[str, str] | None = None,
                 tls: bool = True, certs: DevCerts | None = None, schedulers: int = 1,
                 leader_ttl: int = 5) -> None:
        if mode == "auto":
            mode = default_mode()
        if etcd and mode != "local":
            raise ValueError("a shared etcd is only for local mode")
        self.mode = mode
        self.run_id = uuid.uuid4().hex[:12]
        self.tmp = tempfile.mkdtemp(prefix=f"formation-test-{self.run_id}-")
        self.agent_names = [f"agent-{i}" for i in range(1, agents + 1)]
        # Hosts made up front with no agent yet, for agents a test starts later.
        self.spare_names = [f"agent-{i}" for i in range(agents + 1, agents + spare_hosts + 1)]
        self.capacity = capacity
        self.agent_ttl = agent_ttl
        self.workdir = workdir
        self.prefix = f"/formation-{self.run_id}"
        self.shared_etcd = etcd
        self.etcd_members = etcd_members
        self.scheduler_args = list(scheduler_args)
        # One scheduler is "scheduler" on the control host; replicas are scheduler-1..N, each
        # on a host of its own (so one can be cut off from etcd and the agents).
        self.scheduler_names = ["scheduler"] if schedulers == 1 else \
            [f"scheduler-{i}" for i in range(1, schedulers + 1)]
        self.leader_ttl = leader_ttl
        self._scheduler_listen: dict[str, str] = {}
        self.agent_env = dict(agent_env or {})  # added to every agent's environment
        self.network = Network(self.run_id, mode)
        self.hosts: dict[str, Host] = {}
        self.parts: dict[str, Part] = {}
        self.etcd_endpoints: list[str] = [etcd] if etcd else []
        self.listen = ""
        self._client: Client | None = None
        self._agent_ports: dict[str, str] = {}
        self._port_base = random.randrange(10_000, 25_000, 300)
        self._agent_listen: dict[str, str] = {}
        self.metrics: dict[str, str] = {}  # part -> HOST:PORT of its /metrics
        # certs: another cluster's CA, so one client certificate is good for both.
        self.certs = (certs or DevCerts(os.path.join(self.tmp, "tls"))) if tls else None
        self.insecure = [] if tls or mode == "local" else ["--insecure"]

    # ---- life -----------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def launch(self, host: str) -> Launch:
        h = self.hosts[host]
        return Launch(stdout=lambda name: open(os.path.join(self.tmp, f"{name}.log"), "a"),
                      env={"FTEST_RUN": self.run_id}, wrap=h.wrap)

    @property
    def etcd_url(self) -> str:
        return ",".join(self.etcd_endpoints)

    def _port(self, fixed: int) -> int:
        """In a namespace of its own every port is free; elsewhere ask the OS."""
        return fixed if self.mode == "netns" else free_port()

    def start(self) -> None:
        replicas = [n for n in self.scheduler_names if n != "scheduler"]
        names = [CONTROL, *replicas, *self.agent_names, *self.spare_names]
        if self.mode == "local":
            self.hosts = {n: Host(n, "127.0.0.1") for n in names}
        else:
            self.hosts = self.network.create(names)
        control = self.hosts[CONTROL].address
        if not self.shared_etcd:
            peers = [(f"etcd{i}", self._port(2380 + 100 * i), self._port(2379 + 100 * i))
                     for i in range(self.etcd_members)]
            self._etcd_peers = peers
            self.etcd_endpoints = [f"http://{control}:{c}" for _, _, c in peers]
            for i in range(self.etcd_members):
                self.start_etcd(i)
            for _, _, client in peers:
                wait_port(control, client, 20)
        for name in self.scheduler_names:
            host = self.hosts[CONTROL if name == "scheduler" else name].address
            self._scheduler_listen[name] = f"{host}:{self._port(7070)}"
            self.metrics[name] = f"{host}:{self._port(9100)}"
        # Agents and ctl are given every replica's address.
        self.listen = ",".join(self._scheduler_listen.values())
        for name in self.scheduler_names:
            self.start_scheduler(name)
        for name in self.agent_names:
            self.start_agent(name)
        try:
            wait_for(lambda: sum(a.connected for a in self.client.agents())
                     == len(self.agent_names), 20, what="agents to connect")
        except Timeout as e:  # say why: the last lines of the parts that ended, or all
            ended = [n for n, p in self.parts.items() if p.proc.poll() is not None]
            tails = {n: self.log(n)[-1500:] for n in (ended or list(self.parts))}
            raise Timeout(f"{e}; ended: {ended}; their last lines: {tails}") from None

    def start_etcd(self, i: int = 0) -> Part:
        control = self.hosts[CONTROL].address
        member, peer, client = self._etcd_peers[i]
        cluster = ",".join(f"{m}=http://{control}:{p}" for m, p, _ in self._etcd_peers)
        part = self.launch(CONTROL).etcd(os.path.join(self.tmp, f"{member}-data"), control,
                                         client, peer, member=member, cluster=cluster)
        self.parts[member] = part
        return part

    def stop_etcd(self, i: int = 0, sig: int = signal.SIGTERM) -> None:
        self.parts.pop(f"etcd{i}").stop(sig)

    def restart_etcd(self, i: int = 0, sig: int = signal.SIGTERM) -> None:
        """Stop one etcd member and start it again on its data directory."""
        self.stop_etcd(i, sig)
        self.start_etcd(i)
        wait_port(self.hosts[CONTROL].address, self._etcd_peers[i][2], 20)

    def start_scheduler(self, name: str = "scheduler") -> Part:
        host = CONTROL if name == "scheduler" else name
        listen = self._scheduler_listen[name]
        address = self.hosts[host].address
        part = self.launch(host).scheduler(
            self.etcd_url, listen, metrics=self.metrics[name],
            agent_ttl=self.agent_ttl, prefix=self.prefix,
            extra=[*self.insecure, "--name", name, "--leader-ttl", str(self.leader_ttl),
                   *self.scheduler_args],
            tls=self.tls_for("scheduler", name, address), name=name)
        self.parts[name] = part
        h, port = listen.rsplit(":", 1)
        wait_port(h, int(port), 20, part.proc)
        return part

    def stop_scheduler(self, sig: int = signal.SIGTERM, name: str = "scheduler"
                       ) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        return self.parts.pop(name).stop(sig)

    def restart_scheduler(self, sig: int = signal.SIGTERM, name: str = "scheduler") -> None:
        """Stop (or kill) the scheduler, start it again on the same address, wait for agents."""
        self.stop_scheduler(sig, name)
        self.start_scheduler(name)
        wait_for(lambda: sum(a.connected for a in self.client.agents()) ==
                 sum(1 for n in self.parts if n.startswith("agent")), 20,
                 what="agents to reconnect")

    def leader(self, timeout: float = 20) -> str:
        """The name of the replica that leads, once one does and says so in its metrics."""
        def found() -> str | None:
            for name in self.scheduler_names:
                if name in self.parts and self.parts[name].proc.poll() is None:
                    with contextlib.suppress(OSError):
                        if self.scrape(name).get("formation_scheduler_leader") == 1:
                            return name
            return None
        return str(wait_for(found, timeout, what="a leader"))

    def scheduler_address(self, name: str) -> str:
        return self._scheduler_listen[name]

    def start_agent(self, name: str, capacity: int | None = None,
                    port_range: str | None = None, env: dict[str, str] | None = None,
                    cwd: str | None = None) -> Part:
        """Start (or restart) an agent; `port_range` (A-B) replaces its default range; `env`
        adds to the environment it starts with; `cwd`: where its code is imported from."""
        if port_range is not None:
            self._agent_ports[name] = port_range
        if name not in self._agent_ports:
            if self.mode == "netns":
                self._agent_ports[name] = "5000-5999"
            else:  # one port space for all: a range of its own per agent, below the
                # ephemeral ports (an outgoing connection must not take an instance's port)
                lo = self._port_base + 300 * len(self._agent_ports)
                self._agent_ports[name] = f"{lo}-{lo + 299}"
        host = self.hosts[name]
        if name not in self._agent_listen:
            self._agent_listen[name] = f"{host.address}:{self._port(7071)}"
            self.metrics[name] = f"{host.address}:{self._port(9101)}"
        launch = self.launch(name)
        launch.env.update({**self.agent_env, **(env or {})})
        part = launch.agent(name, self.listen, capacity or self.capacity,
                            self._agent_ports[name], self.workdir,
                            listen=self._agent_listen[name], advertise=host.address,
                            metrics=self.metrics[name], extra=self.insecure,
                            tls=self.tls_for("agent", name, host.address), cwd=cwd)
        self.parts[name] = part
        return part

    def close(self) -> None:
        """Stop everything; fail loudly if any process or namespace of this run is left."""
        if self._client is not None:
            self._client.close()
        for name in [n for n in self.parts if n.startswith("agent")]:
            part = self.parts.pop(name)
            part.proc.send_signal(signal.SIGCONT)  # a frozen agent cannot stop its children
            part.stop(timeout=20)
        for name in [*self.scheduler_names,
                     *sorted(n for n in self.parts if n.startswith("etcd"))]:
            if name in self.parts:
                self.parts[name].proc.send_signal(signal.SIGCONT)  # a frozen one cannot stop
                self.parts.pop(name).stop()
        leaked = procs.with_env("FTEST_RUN", self.run_id)
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.network.destroy()
        left = self.network.leftovers() if self.mode == "netns" else []
        if os.environ.get("FTEST_KEEP_LOGS") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if leaked or left:
            raise AssertionError(f"test run {self.run_id} leaked processes {leaked} "
                                 f"and namespaces {left}")

    # ---- faults ------------------------------------------------------------------

    def kill_agent(self, name: str) -> None:
        self.parts.pop(name).stop(signal.SIGKILL)

    def restart_agent(self, name: str) -> Part:
        if name in self.parts:
            self.parts.pop(name).stop()
        return self.start_agent(name)

    def freeze(self, name: str) -> None:
        self.parts[name].proc.send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.parts[name].proc.send_signal(signal.SIGCONT)

    def cut(self, name: str) -> None:
        self.network.cut(name)

    def heal(self, name: str) -> None:
        self.network.heal(name)

    # ---- using it ----------------------------------------------------------------

    def tls_for(self, role: str, name: str, *sans: str) -> TlsPaths | None:
        """The certificate files of NAME in ROLE (issued on first use); None without TLS."""
        return self.certs.issue(role, name, sans or ("127.0.0.1",)) if self.certs else None

    def tls_env(self, role: str = "operator", name: str = "tester") -> dict[str, str]:
        """FORMATION_TLS_* for a ctl of ROLE (empty without TLS)."""
        paths = self.tls_for(role, name)
        if paths is None:
            return {}
        return {"FORMATION_TLS_CA": paths.ca, "FORMATION_TLS_CERT": paths.cert,
                "FORMATION_TLS_KEY": paths.key}

    def agent_api(self, name: str) -> str:
        """HOST:PORT of an agent's own gRPC API (logs, health)."""
        return self._agent_listen[name]

    def channel(self, address: str = "", role: str = "operator", name: str = "tester",
                options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A raw gRPC channel to the scheduler (or, given an agent's name as `address`, to
        that agent's API), as a client of ROLE would open it."""
        server = "scheduler"
        if address in self._agent_listen:
            address, server = self._agent_listen[address], f"{address}.agent"
        address = address or self.listen.split(",")[0]
        paths = self.tls_for(role, name)
        if paths is None:
            return grpc.insecure_channel(address, options=list(options))
        m = load(paths)
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(m.ca, m.key, m.cert),
                                   options=[*options, *target(f"{server}.formation")])

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.listen, self.tls_for("operator", "tester"), timeout=5)
        return self._client

    def ctl(self, *args: str, check: bool = True, app: str = "default",
            timeout: float = 60, role: str = "operator") -> subprocess.CompletedProcess:
        """Run the real `ctl` CLI against this cluster (as ROLE)."""
        env = {**os.environ, "FORMATION_SCHEDULER": self.listen, "FORMATION_APP": app,
               **self.tls_env(role, role if role != "operator" else "tester")}
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
                if inst.state == InstanceState.RUNNING and procs.alive(inst.pid)}

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

    def truth(self) -> dict[str, dict[str, list[int]]]:
        """host -> instance id -> pids of the instance processes (group leaders) that really
        run there, read from /proc: by network namespace in netns mode, else by parent agent."""
        return self._hosts_of(procs.with_env("FTEST_RUN", self.run_id))

    def _hosts_of(self, pids: list[int]) -> dict[str, dict[str, list[int]]]:
        agents = {part.pid: name for name, part in self.parts.items() if name.startswith("agent")}
        inodes = {h.net_inode(): name for name, h in self.hosts.items() if h.ns}
        out: dict[str, dict[str, list[int]]] = {}
        for pid in pids:
            env = procs.environ(pid)
            iid = env.get("FORMATION_INSTANCE")
            if iid is None or procs.pgid(pid) != pid:
                continue
            if inodes:
                host = inodes.get(procs.net_inode(pid), "?")
            else:
                host = agents.get(procs.ppid(pid) or 0, "?")
            out.setdefault(host, {}).setdefault(iid, []).append(pid)
        return out

    def copy_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """One scan of /proc: (copies as `copies()` counts them, copies counting also those
        that appeared during the scan). /proc is not read atomically: the first never counts
        two where there never were two, the second never counts zero where a replacement
        took over during the scan."""
        first, late = procs.with_env_late("FTEST_RUN", self.run_id)
        strict = _count(self._hosts_of(first))
        return strict, _count(self._hosts_of(first + late))

    def copies(self) -> dict[str, int]:
        """instance id -> how many copies really run, on all hosts together."""
        return _count(self.truth())

    def scrape(self, part: str) -> dict[str, float]:
        """The part's /metrics as {'name{labels}': value}."""
        import urllib.request
        with urllib.request.urlopen(f"http://{self.metrics[part]}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def etcdctl(self, *args: str) -> str:
        """Run etcdctl against this cluster's etcd (as another writer would); its stdout."""
        binary = os.path.join(os.path.dirname(etcd_binary()), "etcdctl")
        result = subprocess.run([binary, "--endpoints", self.etcd_url, *args],
                                capture_output=True, text=True, timeout=30,
                                env={**os.environ, "ETCDCTL_API": "3"})
        if result.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def revision(self) -> int:
        """etcd's revision now."""
        out = json.loads(self.etcdctl("get", self.prefix, "-w", "json"))
        return int(out["header"]["revision"])

    def history(self, after: int) -> list[tuple[str, str, bytes, int]]:
        """Every change under this cluster's prefix made after revision `after`, from etcd's
        history: (PUT or DELETE, key below the prefix, value, revision)."""
        import asyncio

        import aetcd
        until = self.revision()
        host, port = self.etcd_endpoints[0].split("://")[-1].rsplit(":", 1)

        async def read() -> list[tuple[str, str, bytes, int]]:
            out: list[tuple[str, str, bytes, int]] = []
            if until <= after:
                return out
            async with aetcd.Client(host=host, port=int(port)) as client:
                watch = await client.watch_prefix(self.prefix.encode(),
                                                  start_revision=after + 1)
                events = aiter(watch)
                while True:  # history is sent at once: a second of silence is its end
                    try:
                        event = await asyncio.wait_for(anext(events), 1.0)
                    except (TimeoutError, StopAsyncIteration):
                        break
                    kv = event.kv
                    out.append((str(event.kind), kv.key.decode()[len(self.prefix):],
                                kv.value, kv.mod_revision))
                    if kv.mod_revision >= until:
                        break
                await watch.cancel()
            return out
        return asyncio.run(asyncio.wait_for(read(), 20))

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.tmp, f"{name}.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


def _count(truth: dict[str, dict[str, list[int]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for by_id in truth.values():
        for iid, pids in by_id.items():
            counts[iid] = counts.get(iid, 0) + len(pids)
    return counts
