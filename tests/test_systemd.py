"""deploy/systemd: the units pass `systemd-analyze verify` and say what operations need; each
daemon tells systemd it is ready (READY=1) once it serves and STOPPING=1 on SIGTERM; and
common/sdnotify.py survives a hostile $NOTIFY_SOCKET.

PID 1 here need not be systemd and /opt/formation need not exist, so the units are verified as
copies whose ExecStart= names this venv's scripts and whose EnvironmentFile= names the example
files. The daemons are started as systemd starts them: the example env file's variables (with
this test's ports, etcd prefix, workdir and certificates over the host-specific ones) and
$NOTIFY_SOCKET naming a datagram socket the test reads, with the sender's pid attached.
"""
from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent import base_environment
from agent.cgroups import GONE_TIMEOUT
from agent.main import MAX_CAPACITY, SHUTDOWN_SLACK
from common import sdnotify
from common.limits import MAX_STOP_TIMEOUT
from common.tls import TlsPaths, load, target
from ctl.devcerts import DevCerts
from ctl.localcluster import Launch, Part, free_port
from tests.cluster import procs, wait_for

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
DAEMONS = ("scheduler", "agent")
SCRIPTS = Path(sysconfig.get_path("scripts"))  # this venv's bin: formation-scheduler, -agent
GUARDIAN_STOP = 10.0  # seconds the agent gives its guardian to end (Launcher.close_guardian)
CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def systemd_analyze() -> str:
    """The systemd-analyze binary: a missing one fails the test (CI installs `systemd`)."""
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not os.access(found, os.X_OK):
        pytest.fail("systemd-analyze is missing: install the `systemd` package")
    return found


# ---- reading units and env files ------------------------------------------------------------

@dataclass
class Setting:
    key: str
    value: str
    comment: list[str]  # the comment lines right above it


def parse_unit(text: str) -> dict[str, list[Setting]]:
    """section -> its settings in order (a unit may repeat a key; the last one wins)."""
    sections: dict[str, list[Setting]] = {}
    current: list[Setting] | None = None
    comment: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        assert not line.endswith("\\"), f"no continuation lines, please: {raw!r}"
        if not line:
            comment = []
        elif line[0] in "#;":
            comment.append(line[1:].strip())
        elif line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            comment = []
        else:
            key, sep, value = line.partition("=")
            assert sep and current is not None, f"not KEY=VALUE in a section: {raw!r}"
            current.append(Setting(key.strip(), value.strip(), comment))
            comment = []
    return sections


def unit(daemon: str) -> dict[str, list[Setting]]:
    return parse_unit((UNITS / f"formation-{daemon}.service").read_text())


def setting(sections: dict[str, list[Setting]], section: str, key: str) -> Setting | None:
    found = [s for s in sections.get(section, []) if s.key == key]
    return found[-1] if found else None


def value(sections: dict[str, list[Setting]], section: str, key: str) -> str | None:
    s = setting(sections, section, key)
    return s.value if s else None


def seconds(text: str) -> float:
    """A systemd time span of the forms these units use: 30, 30s, 2min, 1h."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|h)?", text)
    assert m, f"not a time span these tests read: {text!r}"
    return float(m[1]) * {"s": 1, "min": 60, "h": 3600, None: 1}[m[2]]


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them: blank lines and lines starting
    with # or ; are comments, whitespace around the key and the value goes, and so does one
    pair of quotes around the value."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"no continuation lines, please: {raw!r}"
        key, sep, val = line.partition("=")
        key, val = key.strip(), val.strip()
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"not KEY=VALUE: {raw!r}"
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        env[key] = val
    return env


def env_file(daemon: str) -> dict[str, str]:
    return parse_env_file((UNITS / f"{daemon}.env").read_text())


def documented_variables(daemon: str) -> set[str]:
    """The FORMATION_* names an env file sets or shows commented out."""
    return set(re.findall(r"^[#;]?\s*(FORMATION_[A-Z_]+)=", (UNITS / f"{daemon}.env").read_text(),
                          re.MULTILINE))


def read_variables(daemon: str) -> set[str]:
    """The FORMATION_* names the daemon reads, as its --help says."""
    done = subprocess.run([str(SCRIPTS / f"formation-{daemon}"), "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    return set(re.findall(r"env\s+(FORMATION_[A-Z_]+)", done.stdout))


# ---- systemd-analyze verify -----------------------------------------------------------------

def verify(*units: Path) -> tuple[int, str]:
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", "--generators=no",
                           *map(str, units)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_COLORS": "0"})
    return done.returncode, (done.stdout + done.stderr).strip()


def local_copy(daemon: str, where: Path, extra: str = "") -> Path:
    """The unit with ExecStart= in this venv and EnvironmentFile= the example file; `extra`
    lines go at the end of [Service]."""
    text = (UNITS / f"formation-{daemon}.service").read_text()
    start, envfile = f"/opt/formation/bin/formation-{daemon}", f"/etc/formation/{daemon}.env"
    assert f"ExecStart={start}\n" in text and f"EnvironmentFile={envfile}\n" in text
    assert (SCRIPTS / f"formation-{daemon}").exists()
    text = text.replace(start, str(SCRIPTS / f"formation-{daemon}"))
    text = text.replace(envfile, str(UNITS / f"{daemon}.env"))
    text = text.replace("\n[Install]", f"{extra}\n[Install]") if extra else text
    where.mkdir(exist_ok=True)
    copy = where / f"formation-{daemon}.service"  # verify takes the unit's name from the file
    copy.write_text(text)
    return copy


def test_the_units_verify_without_a_warning(tmp_path):
    code, said = verify(*(local_copy(d, tmp_path) for d in DAEMONS))
    assert code == 0 and said == "", said


def test_verify_does_speak_here(tmp_path):
    """The check above means something: a flawed copy is reported, on this machine too."""
    copy = local_copy("agent", tmp_path, extra="BogusKey=1\nKillMode=sometimes\n")
    _, said = verify(copy)
    assert "BogusKey" in said and "sometimes" in said, said


# ---- what the units say ---------------------------------------------------------------------

@pytest.mark.parametrize("daemon", DAEMONS)
def test_unit_settings_both_share(daemon):
    u = unit(daemon)
    assert value(u, "Service", "Type") == "notify"
    assert value(u, "Service", "NotifyAccess") == "main"  # never an instance
    assert value(u, "Service", "ExecStart") == f"/opt/formation/bin/formation-{daemon}"
    assert value(u, "Service", "EnvironmentFile") == f"/etc/formation/{daemon}.env"
    assert value(u, "Service", "Restart") == "on-failure"
    assert seconds(value(u, "Service", "RestartSec") or "") > 0
    assert int(value(u, "Service", "LimitNOFILE") or 0) >= 65536
    assert "network-online.target" in (value(u, "Unit", "After") or "")
    assert "network-online.target" in (value(u, "Unit", "Wants") or "")
    assert value(u, "Service", "User") not in (None, "", "root", "0")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                "RestrictSUIDSGID", "LockPersonality"):
        assert value(u, "Service", key) == "yes", key
    assert value(u, "Service", "ProtectSystem") == "strict"
    assert value(u, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value(u, "Install", "WantedBy") == "multi-user.target"


def test_scheduler_unit():
    u = unit("scheduler")
    assert value(u, "Service", "User") == "formation"
    assert value(u, "Service", "KillMode") is None  # control-group: it has no children
    assert seconds(value(u, "Service", "TimeoutStopSec") or "") <= 120
    assert value(u, "Service", "ProtectControlGroups") == "yes"


def test_agent_unit():
    u = unit("agent")
    kill = setting(u, "Service", "KillMode")
    assert kill is not None and kill.value == "mixed"
    assert any("mixed" in line for line in kill.comment), "argue KillMode in a comment above it"
    # a stop never cut short: the longest stop_timeout, the agent's slack, a cgroup emptying
    # and its guardian ending
    longest_stop = MAX_STOP_TIMEOUT + SHUTDOWN_SLACK + GONE_TIMEOUT + GUARDIAN_STOP
    assert seconds(value(u, "Service", "TimeoutStopSec") or "") > longest_stop
    assert int(value(u, "Service", "LimitNOFILE") or 0) > 2 * MAX_CAPACITY  # pipe + pidfd each
    # its own user, with its cgroup delegated, writable (ProtectControlGroups=yes would not be)
    assert value(u, "Service", "User") not in ("formation", value(unit("scheduler"), "Service",
                                                                  "User"))
    assert value(u, "Service", "Delegate") == "yes"
    assert value(u, "Service", "ProtectControlGroups") in (None, "no")
    # the instances' workdir is the state directory, and writable
    workdir = env_file("agent")["FORMATION_WORKDIR"]
    assert workdir == "/var/lib/" + (value(u, "Service", "StateDirectory") or "")
    assert workdir in (value(u, "Service", "ReadWritePaths") or "").split()


@pytest.mark.parametrize("daemon", DAEMONS)
def test_env_files_name_every_setting_and_only_real_ones(daemon):
    text = (UNITS / f"{daemon}.env").read_text()
    assert all(k.startswith("FORMATION_") for k in env_file(daemon))
    assert documented_variables(daemon) == read_variables(daemon)
    tls = {k: v for k, v in env_file(daemon).items() if k.startswith("FORMATION_TLS_")}
    assert set(tls) == {"FORMATION_TLS_CA", "FORMATION_TLS_CERT", "FORMATION_TLS_KEY"}
    assert all(v.startswith("/etc/formation/tls/") for v in tls.values()), tls
    assert "\nFORMATION_INSECURE=" not in text  # plaintext only when asked for


# ---- the daemons notify ---------------------------------------------------------------------

class Notifications:
    """The socket a daemon is given as $NOTIFY_SOCKET: datagrams, each with its sender's pid
    (SO_PASSCRED), as systemd reads them to keep NotifyAccess=main."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.seen: list[tuple[int, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, timeout: float) -> tuple[int, dict[str, str]] | None:
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDS.size))
        except TimeoutError:
            return None
        pid = next(CREDS.unpack(d[:CREDS.size])[0] for level, kind, d in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
        self.seen.append((pid, fields))
        return pid, fields

    def wait(self, key: str, part: Part, timeout: float, log: Path) -> dict[str, str]:
        """The first message with KEY=1 from the part's pid; fails at once if the part ends
        first, or after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self._receive(min(0.2, max(deadline - time.monotonic(), 0.01)))
            if got is not None and got[1].get(key) == "1":
                assert got[0] == part.pid, f"{key}=1 from pid {got[0]}, not the main {part.pid}"
                return got[1]
            if got is None and part.proc.poll() is not None:
                pytest.fail(f"{part.name} exited {part.proc.returncode} before {key}=1 "
                            f"(saw {self.seen}): {log.read_text()[-2000:]}")
        pytest.fail(f"no {key}=1 from {part.name} within {timeout}s (saw {self.seen}): "
                    f"{log.read_text()[-2000:]}")


@pytest.fixture
def run_env(monkeypatch) -> Iterator[str]:
    """A run id the started daemons carry (FTEST_RUN: the leak check finds their children);
    no FORMATION_* or $NOTIFY_SOCKET of whoever runs the tests reaches them."""
    for key in [k for k in os.environ if k.startswith("FORMATION_") or k == "NOTIFY_SOCKET"]:
        monkeypatch.delenv(key)
    run = uuid.uuid4().hex[:12]
    yield run
    left = procs.with_env("FTEST_RUN", run)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


@contextlib.contextmanager
def started(daemon: str, overrides: dict[str, str], notify: Notifications, run: str,
            log: Path) -> Iterator[Part]:
    """The daemon as its unit starts it: ExecStart with the env file's variables (these
    overrides over them; each one must be a variable of the file) and $NOTIFY_SOCKET."""
    env = env_file(daemon)
    assert set(overrides) <= set(env), set(overrides) - set(env)
    env.update(overrides, NOTIFY_SOCKET=notify.path, FTEST_RUN=run)
    # SIM115: the Part owns the log file and closes it on stop()
    launch = Launch(stdout=lambda name: open(log, "a"), env=env)  # noqa: SIM115
    part = launch.start(daemon, [str(SCRIPTS / f"formation-{daemon}")])
    try:
        yield part
    finally:
        part.stop(signal.SIGKILL)
        # its children (the agent's guardian) end with it; a leak is the fixture's to report
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not procs.with_env("FTEST_RUN", run), 15, what="children to end")


def serves_grpc(address: str, certs: TlsPaths, server: str) -> bool:
    """The gRPC health check answers at address at once (mutual TLS, checking `server`)."""
    host, port = address.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=1).close()
    m = load(certs)
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(m.ca, m.key, m.cert),
                             options=target(server)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=2)
    return reply.status in (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)


def serves_metrics(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as r:
        return r.status == 200


@pytest.fixture
def notify(tmp_path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.close()


def test_the_scheduler_notifies_ready_once_it_serves_and_stopping(etcd_url, tmp_path, notify,
                                                                   run_env):
    certs = DevCerts(str(tmp_path / "tls"))
    name = env_file("scheduler")["FORMATION_SCHEDULER_NAME"]
    own, client = certs.issue("scheduler", name), certs.issue("operator", "tester")
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    overrides = {"FORMATION_ETCD": etcd_url, "FORMATION_ETCD_PREFIX": f"/formation-{run_env}",
                 "FORMATION_ETCD_CA": "", "FORMATION_ETCD_CERT": "", "FORMATION_ETCD_KEY": "",
                 "FORMATION_LISTEN": listen, "FORMATION_SCHEDULER_ADVERTISE": listen,
                 "FORMATION_METRICS_LISTEN": metrics, "FORMATION_TLS_CA": own.ca,
                 "FORMATION_TLS_CERT": own.cert, "FORMATION_TLS_KEY": own.key}
    log = tmp_path / "scheduler.log"
    with started("scheduler", overrides, notify, run_env, log) as part:
        ready = notify.wait("READY", part, 30, log)
        assert serves_grpc(listen, client, "scheduler.formation")
        assert serves_metrics(metrics)
        assert listen in ready.get("STATUS", "")
        part.proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING", part, 30, log)
        assert part.proc.wait(30) == 0, log.read_text()[-2000:]


def test_the_agent_notifies_ready_reloading_and_stopping(tmp_path, notify, run_env):
    certs = DevCerts(str(tmp_path / "tls"))
    name = env_file("agent")["FORMATION_AGENT_NAME"]
    own, client = certs.issue("agent", name), certs.issue("scheduler", "sched-1")
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    overrides = {  # no scheduler: the agent serves its API whether or not it reaches one
        "FORMATION_SCHEDULER": f"127.0.0.1:{free_port()}", "FORMATION_ADVERTISE": "127.0.0.1",
        "FORMATION_AGENT_LISTEN": listen, "FORMATION_METRICS_LISTEN": metrics,
        "FORMATION_WORKDIR": str(workdir),
        # the unit delegates a cgroup to the agent; a test process need not have one
        "FORMATION_ISOLATION": "auto",
        "FORMATION_TLS_CA": own.ca, "FORMATION_TLS_CERT": own.cert, "FORMATION_TLS_KEY": own.key}
    log = tmp_path / "agent.log"
    with started("agent", overrides, notify, run_env, log) as part:
        notify.wait("READY", part, 30, log)
        assert serves_grpc(listen, client, f"{name}.agent.formation")
        assert serves_metrics(metrics)
        # The unit's ExecReload: an upgrade in place, from the same (main) pid.
        part.proc.send_signal(signal.SIGHUP)
        reloading = notify.wait("RELOADING", part, 30, log)
        sent = int(reloading["MONOTONIC_USEC"]) * 1000
        assert 0 < sent <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        notify.wait("READY", part, 30, log)
        assert "upgraded in place" in log.read_text()
        assert serves_grpc(listen, client, f"{name}.agent.formation")
        part.proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING", part, 30, log)
        assert part.proc.wait(30) == 0, log.read_text()[-2000:]


def test_instances_do_not_inherit_the_service_managers_variables(monkeypatch):
    """Only the agent may speak for its service; an instance that could would mark it ready
    or stopping (or, with NotifyAccess=main, fill the journal with refusals)."""
    for key in sdnotify.PRIVATE_ENV:
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("SOMETHING_OF_THE_HOST", "kept")
    env = base_environment()
    assert env["SOMETHING_OF_THE_HOST"] == "kept"
    leaked = sorted(set(env) & sdnotify.PRIVATE_ENV)
    assert leaked == []


# ---- common/sdnotify.py against hostile sockets ---------------------------------------------

def test_no_socket_no_notification(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    sdnotify.ready("x")  # nothing to say it to, nothing raised
    sdnotify.reloading()
    sdnotify.stopping()


@pytest.mark.parametrize("name", ["", "@", "relative.sock", "vsock:2:1234", "/" + "x" * 200])
def test_unusable_socket_names(monkeypatch, name):
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.notify("READY=1") is False


def test_missing_path_and_things_that_are_not_datagram_sockets(monkeypatch, tmp_path):
    plain = tmp_path / "file"
    plain.write_text("not a socket")
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(tmp_path / "stream.sock"))
    stream.listen()
    try:
        for path in (tmp_path / "missing.sock", plain, tmp_path, tmp_path / "stream.sock"):
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
            assert sdnotify.notify("READY=1") is False, path
            sdnotify.ready()  # and the helpers never raise either
    finally:
        stream.close()


def test_a_socket_nobody_listens_on_any_more(monkeypatch, tmp_path):
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(tmp_path / "gone.sock"))
    gone.close()  # the file stays, nobody is behind it
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("READY=1") is False


def receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


def test_what_is_sent_and_that_the_variable_stays(monkeypatch, tmp_path):
    path = str(tmp_path / "notify.sock")
    with receiver(path) as r:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        sdnotify.ready("serving on\n127.0.0.1:7070")
        assert r.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:7070"
        sdnotify.ready()
        assert r.recv(4096) == b"READY=1"
        sdnotify.stopping()
        assert r.recv(4096) == b"STOPPING=1"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sdnotify.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        first, second = r.recv(4096).decode().split("\n")
        assert first == "RELOADING=1" and second.startswith("MONOTONIC_USEC=")
        assert before <= int(second.partition("=")[2]) <= after
        assert sdnotify.notify("WHATEVER=\udcff") is False  # not encodable: refused, not raised
    assert os.environ["NOTIFY_SOCKET"] == path  # a re-executed agent notifies again


def test_abstract_socket(monkeypatch):
    name = f"formation-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert sdnotify.notify("READY=1") is False  # nobody bound yet
    with receiver("\0" + name) as r:
        assert sdnotify.notify("READY=1") is True
        assert r.recv(4096) == b"READY=1"


def test_a_full_socket_nobody_reads_never_blocks(monkeypatch, tmp_path):
    path = str(tmp_path / "full.sock")
    with receiver(path):  # bound, never read
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        results: list[bool] = []

        def flood() -> None:
            for _ in range(100_000):
                results.append(sdnotify.notify("STATUS=" + "x" * 1024))
                if not results[-1]:
                    return

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "notify blocked on a full socket"
        assert results and results[0] is True and results[-1] is False, len(results)
        start = time.monotonic()
        assert sdnotify.notify("READY=1") is False  # still full: refused at once
        assert time.monotonic() - start < 1


def test_sdnotify_is_stdlib_only():
    tree = ast.parse((ROOT / "common" / "sdnotify.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported
