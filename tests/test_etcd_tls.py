"""The scheduler on an etcd that wants TLS client certificates (and a user): real etcd and
scheduler processes, certificates of a CA of etcd's own (common/pki.py); the --etcd-* flags
and parse_endpoints as units."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.pki import issue, make_ca
from ctl.localcluster import Launch, Part, etcd_binary, free_port, wait_port
from scheduler import main as scheduler_main
from scheduler.etcdclient import PASSWORD_ENV, Endpoint, EtcdAuth, explain, from_flags
from scheduler.store import parse_endpoints
from tests.cluster import wait_for
from tests.cluster.harness import ROOT

TTL = 2  # etcd's --auth-token-ttl here: tokens idle this long (+ up to 1 s) are invalid


@dataclass
class Pki:
    dir: str

    def __getattr__(self, name: str) -> str:
        return os.path.join(self.dir, f"{name.replace('_', '-')}.pem")


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    """etcd's own CA (server and client certificates) and, apart, another CA's client."""
    d = tempfile.mkdtemp(prefix="formation-etcd-pki-")
    files: dict[str, bytes] = {}
    ca, ca_key = make_ca("etcd CA")
    other_ca, other_key = make_ca("another CA")
    files["ca"] = ca
    files["server"], files["server-key"] = issue(ca, ca_key, "scheduler", "etcd",
                                                 sans=["127.0.0.1"])
    files["client"], files["client-key"] = issue(ca, ca_key, "scheduler", "sched")
    files["other"], files["other-key"] = issue(other_ca, other_key, "scheduler", "sched")
    files["bundle"] = other_ca + ca  # trusts etcd, and its first CA issued "other"
    for name, data in files.items():
        with open(os.path.join(d, f"{name}.pem"), "wb") as f:
            f.write(data)
    yield Pki(d)
    shutil.rmtree(d, ignore_errors=True)


class Etcd:
    """One etcd serving https with --client-cert-auth, stopped by its fixture."""

    def __init__(self, pki: Pki, env: dict[str, str]) -> None:
        self.pki = pki
        self.tmp = tempfile.mkdtemp(prefix="formation-etcd-tls-")
        self.ports = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.ports[0]}"
        self.launch = Launch(stdout=self._log, env=env)
        self.part = self.start()

    def start(self) -> Part:
        part = self.launch.etcd(os.path.join(self.tmp, "data"), "127.0.0.1", *self.ports,
                                tls=(self.pki.ca, self.pki.server, self.pki.server_key))
        wait_port("127.0.0.1", self.ports[0], 20, part.proc)
        return part

    def restart(self) -> None:
        """Stop and start again on the same data: every auth token it gave is forgotten."""
        self.part.stop()
        self.part = self.start()

    def _log(self, name: str):
        return open(os.path.join(self.tmp, f"{name}.log"), "a")  # noqa: SIM115 - Part closes it

    def ctl(self, *args: str, user: str = "") -> str:
        """etcdctl with etcd's client certificate (as `user` if given); its stdout."""
        binary = os.path.join(os.path.dirname(etcd_binary()), "etcdctl")
        argv = [binary, "--endpoints", self.url, "--cacert", self.pki.ca, "--cert",
                self.pki.client, "--key", self.pki.client_key, *args]
        if user:
            argv += ["--user", user]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "ETCDCTL_API": "3"})
        assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def close(self) -> None:
        self.part.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd(pki: Pki) -> Iterator[Etcd]:
    e = Etcd(pki, {})
    yield e
    e.close()


@pytest.fixture(scope="module")
def auth_etcd(pki: Pki) -> Iterator[Etcd]:
    """With `auth enable`: root, and user formation (password pw) may read and write
    /formation-d/ only. Idle tokens expire after TTL seconds."""
    e = Etcd(pki, {"ETCD_AUTH_TOKEN_TTL": str(TTL)})
    try:
        for args in (["user", "add", "root", "--new-user-password", "rootpw"],
                     ["user", "add", "formation", "--new-user-password", "pw"],
                     ["role", "add", "formation"],
                     ["role", "grant-permission", "formation", "--prefix=true", "readwrite",
                      "/formation-d/"],
                     ["user", "grant-role", "formation", "formation"], ["auth", "enable"]):
            e.ctl(*args)
        yield e
    finally:
        e.close()


@dataclass
class Scheduler:
    part: Part
    listen: str
    metrics: str
    log_path: str

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def serving(self) -> bool:
        with grpc.insecure_channel(self.listen) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "FORMATION_SCHEDULER": self.listen, "FORMATION_APP": "default"}
        return subprocess.run([sys.executable, "-m", "ctl", *args], capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=60)

    def ok(self, *args: str) -> str:
        done = self.ctl(*args)
        assert done.returncode == 0, f"ctl {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout


@pytest.fixture
def start_scheduler(tmp_path) -> Iterator[Callable[..., Scheduler]]:
    """start_scheduler(etcd_url, prefix, *flags, password=...) -> a started scheduler (plaintext
    on 127.0.0.1), stopped after the test."""
    parts: list[Part] = []

    def start(url: str, prefix: str, *flags: str, password: str = "") -> Scheduler:
        log_path = str(tmp_path / f"scheduler{len(parts)}.log")
        env = {PASSWORD_ENV: password} if password else {}
        launch = Launch(stdout=lambda name: open(log_path, "a"), env=env)  # noqa: SIM115
        listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        part = launch.scheduler(url, listen, metrics=metrics, prefix=prefix, extra=flags)
        parts.append(part)
        return Scheduler(part, listen, metrics, log_path)

    yield start
    for part in parts:
        part.stop()


def refused(s: Scheduler, etcd: Etcd, prefix: str, words: tuple[str, ...], user: str = ""
            ) -> None:
    """The scheduler says why in one line naming etcd (no traceback), does not serve, and
    wrote nothing."""
    line = wait_for(lambda: next((ln for ln in s.log().splitlines()
                                  if "etcd" in ln and all(w in ln for w in words)), None),
                    15, what=f"a line saying {words}")
    assert "Traceback" not in s.log(), s.log()
    assert line is not None and len(line) < 400, line
    assert s.part.proc.poll() is None and not s.serving()
    assert etcd.ctl("get", "--prefix", f"{prefix}/", "--keys-only", user=user) == ""


def test_scheduler_with_etcd_client_certificate_works(etcd, pki, start_scheduler):
    s = start_scheduler(etcd.url, "/formation-a", "--etcd-ca", pki.ca, "--etcd-cert",
                        pki.client, "--etcd-key", pki.client_key)
    wait_for(s.serving, 20, what="the scheduler to serve")
    s.ok("deploy", "examples/Procfile")
    s.ok("scale", "web=2", "worker=1")
    assert json.loads(s.ok("formation", "--json"))["web"]["desired"] == 2
    assert etcd.ctl("get", "/formation-a/apps/default/formation/web", "--print-value-only"
                    ).strip() == "2"
    with urllib.request.urlopen(f"http://{s.metrics}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    for label in ('cert="etcd"', 'cert="etcd-ca"'):
        assert f"formation_tls_cert_expiry_timestamp_seconds{{{label}}}" in metrics


def test_no_client_certificate_is_refused(etcd, pki, start_scheduler):
    s = start_scheduler(etcd.url, "/formation-b", "--etcd-ca", pki.ca)
    refused(s, etcd, "/formation-b", ("TLS", "client certificate"))


def test_client_certificate_of_another_ca_is_refused(etcd, pki, start_scheduler):
    s = start_scheduler(etcd.url, "/formation-c", "--etcd-ca", pki.bundle, "--etcd-cert",
                        pki.other, "--etcd-key", pki.other_key)
    refused(s, etcd, "/formation-c", ("TLS", "client certificate"))


def test_etcd_user_and_password(auth_etcd, pki, start_scheduler):
    tls = ("--etcd-ca", pki.ca, "--etcd-cert", pki.client, "--etcd-key", pki.client_key)
    s = start_scheduler(auth_etcd.url, "/formation-d", *tls, "--etcd-user", "formation",
                        password="pw")
    wait_for(s.serving, 20, what="the scheduler to serve")
    s.ok("deploy", "examples/Procfile")
    # Idle past etcd's token ttl (the subject here, not a wait for something to happen): the
    # next write meets "invalid auth token" and must authenticate again. (The deploy's events
    # are written up to a second after it returns: the idle time counts from then.)
    time.sleep(TTL + 3)
    s.ok("scale", "web=3")
    assert "authenticating again" in s.log()
    # A restarted etcd knows no token: the watch must come back with a new one, or another
    # writer's change would never be seen (ctl formation answers from memory).
    auth_etcd.restart()
    auth_etcd.ctl("put", "/formation-d/apps/default/formation/worker", "2", user="root:rootpw")
    wait_for(lambda: json.loads(s.ok("formation", "--json"))["worker"]["desired"] == 2, 15,
             what="the watch to see worker=2")
    assert "Traceback" not in s.log()

    wrong = start_scheduler(auth_etcd.url, "/formation-dd", *tls, "--etcd-user", "formation",
                            password="not-it")
    refused(wrong, auth_etcd, "/formation-dd", ("refused user formation",
                                                "authentication failed"), user="root:rootpw")


# ---- flags and endpoints (no processes) ----------------------------------------------------

def test_parse_endpoints():
    assert parse_endpoints("http://a:1,b") == [Endpoint("a", 1), Endpoint("b", 2379)]
    assert parse_endpoints("https://a:1, https://[::1]:2") == [Endpoint("a", 1, True),
                                                               Endpoint("::1", 2, True)]
    assert parse_endpoints("a:1", tls=True) == [Endpoint("a", 1, True)]
    assert parse_endpoints("HTTPS://a") == [Endpoint("a", 2379, True)]
    for bad, words in (("ftp://a:1", "http or https"), ("http://a,https://b", "mix"),
                       ("a,https://b", "mix"), ("", "no etcd URL"), ("http://a:99999", "port"),
                       ("http://:1", "invalid"), ("unix:///x", "http or https")):
        with pytest.raises(ValueError, match=words):
            parse_endpoints(bad)


def test_tls_failures_are_explained_in_one_line():
    grpc_says = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: "
    for detail, words in (
            ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:10000412:SSL "
             "routines:OPENSSL_internal:SSLV3_ALERT_BAD_CERTIFICATE: OK", "client certificate"),
            ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
             "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
             "certificate: OK", "not trusted (unable to get local issuer certificate): "
                                "check --etcd-ca"),
            ("Custom verification check failed with error: UNAUTHENTICATED: Hostname "
             "Verification Check failed.", "--san"),
            ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
             "routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification "
             "context: OK", "is it serving https?")):
        text = explain(RuntimeError(grpc_says + detail))
        assert words in text and "\n" not in text, text
    assert explain(RuntimeError("etcdserver: permission denied")) == "permission denied"


def test_etcd_flag_combinations(pki):
    env = {PASSWORD_ENV: "pw"}
    endpoints, auth = from_flags("https://h:1", pki.ca, pki.client, pki.client_key,
                                 "u", env)
    assert endpoints == [Endpoint("h", 1, True)] and auth.tls and auth.password == "pw"
    assert "pw" not in repr(auth)
    assert from_flags("h:1", pki.ca)[0] == [Endpoint("h", 1, True)]  # bare: https with a CA
    assert from_flags("https://h", env={})[1] == EtcdAuth()  # system roots
    for args, kw, words in (
            (("https://h", pki.ca, pki.client), {}, "together"),
            (("https://h", pki.ca, "", pki.client_key), {}, "together"),
            (("https://h", "", pki.client, pki.client_key), {}, "needs --etcd-ca"),
            (("https://h", "", "", "", "u"), {"env": {}}, PASSWORD_ENV),
            (("https://h",), {"env": env}, "--etcd-user is not"),
            (("http://h", pki.ca), {}, "https://"),
            (("https://h", "/nonexistent/ca.pem"), {}, "cannot read"),
            (("https://h", pki.client_key), {}, "not a PEM CA certificate"),
            (("https://h", pki.ca, pki.other, pki.other_key), {}, "not issued by"),
            (("https://h", pki.ca, pki.client, pki.other_key), {}, "does not belong")):
        with pytest.raises(ValueError, match=words):
            from_flags(*args, **{"env": {}, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("argv,env,words", [
    (["--etcd-cert", "c.pem"], {}, "together"),
    (["--etcd-user", "u"], {}, PASSWORD_ENV),
    (["--etcd", "http://h:1", "--etcd-ca", "ca.pem"], {}, "https://"),
    ([], {"FORMATION_ETCD_USER": "u"}, PASSWORD_ENV),
])
def test_scheduler_refuses_bad_etcd_flags(argv, env, words, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        scheduler_main.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err
    assert err.splitlines()[-1].startswith("formation-scheduler: error:")
