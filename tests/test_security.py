"""Mutual TLS and roles, end to end with real certificates: every refusal has the right code
and changes nothing; rotation needs no restart; env values never leak (docs/security.md)."""
from __future__ import annotations

import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid

import grpc
import pytest
from cryptography import x509

from common import pki
from common.tls import TlsPaths, load, target
from ctl.devcerts import DevCerts
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from tests.cluster import wait_for
from tests.cluster.harness import ROOT


def open_channel(address: str, paths: TlsPaths | None, server: str = "scheduler.formation"
                 ) -> grpc.Channel:
    if paths is None:
        return grpc.insecure_channel(address)
    ca, key, cert = (open(p, "rb").read() for p in (paths.ca, paths.key, paths.cert))  # noqa: SIM115
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert),
                               options=target(server))


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def scale_as(c, paths: TlsPaths | None, n: int) -> grpc.StatusCode:
    with open_channel(c.listen, paths) as ch:
        return code_of(lambda: pbg.ControlStub(ch).Scale(
            pb.ScaleRequest(app="default", counts={"worker": n}), timeout=5))


def counts(c) -> dict[str, int]:
    return {t.type: t.desired for t in c.client.formation("default").types}


@pytest.fixture
def deployed(make_cluster):
    c = make_cluster(agents=2)
    c.ctl("deploy", "examples/Procfile")
    c.ctl("scale", "web=0")  # a new app's web starts at 1: these tests need only a worker
    c.ctl("scale", "worker=1")
    c.wait_running({"worker.1"})
    return c


def test_a_peer_without_a_good_certificate_is_refused_and_nothing_changes(deployed, tmp_path):
    c = deployed
    now = datetime.datetime.now(datetime.UTC)
    other = DevCerts(str(tmp_path / "other")).issue("operator", "tester")
    expired_cert, expired_key = pki.issue(c.certs.ca, c.certs.ca_key, "operator", "old",
                                          days=1, not_before=now - datetime.timedelta(days=9))
    (tmp_path / "old.pem").write_bytes(expired_cert)
    (tmp_path / "old-key.pem").write_bytes(expired_key)
    expired = TlsPaths(c.certs.ca_path, str(tmp_path / "old.pem"), str(tmp_path / "old-key.pem"))
    before = counts(c)
    # Plaintext against TLS; a certificate of another CA; an expired one: no handshake.
    for paths in (None, other, expired):
        assert scale_as(c, paths, 5) == grpc.StatusCode.UNAVAILABLE
    # TLS but no client certificate at all.
    m = load(c.tls_for("operator", "tester"))
    with grpc.secure_channel(c.listen, grpc.ssl_channel_credentials(m.ca),
                             options=target("scheduler.formation")) as ch:
        assert code_of(lambda: pbg.ControlStub(ch).Scale(pb.ScaleRequest(
            app="default", counts={"worker": 5}), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # An operator certificate of this CA, but the server checked as if it were an agent.
    with open_channel(c.listen, c.tls_for("operator", "tester"), "agent-1.agent.formation") as ch:
        assert code_of(lambda: pbg.ControlStub(ch).ListAgents(
            pb.ListAgentsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    assert counts(c) == before
    # ctl says it in one line, exit 1.
    r = subprocess.run([sys.executable, "-m", "ctl", "scale", "worker=5"], capture_output=True,
                       text=True, cwd=ROOT, timeout=30,
                       env={**os.environ, "FORMATION_SCHEDULER": c.listen})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "TLS handshake failed" in r.stderr
    assert counts(c) == before


def test_roles_viewer_reads_but_may_not_change_and_agents_only_link(deployed):
    c = deployed
    before = counts(c)
    r = c.ctl("scale", "worker=3", role="viewer", check=False)
    assert r.returncode == 1 and r.stderr == "ctl: permission denied: viewer may not scale\n"
    assert c.ctl("ps", role="viewer").stdout.count("worker.1") == 1
    r = c.ctl("logs", "worker", "--tail", "1", role="viewer", check=False)
    assert r.returncode == 1 and "viewer may not read logs" in r.stderr
    assert c.ctl("logs", "worker", "--tail", "1").returncode == 0  # an operator may
    with open_channel(c.listen, c.tls_for("agent", "agent-1")) as ch:  # an agent's certificate
        assert code_of(lambda: pbg.ControlStub(ch).ListAgents(
            pb.ListAgentsRequest(), timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    with open_channel(c.listen, c.tls_for("operator", "tester")) as ch:  # operators: no link
        call = pbg.AgentLinkStub(ch).Connect(iter([pb.AgentMessage(hello=pb.Hello(
            name="evil", capacity=100))]), timeout=5)
        assert code_of(lambda: next(call)) == grpc.StatusCode.PERMISSION_DENIED
    assert counts(c) == before
    assert "evil" not in {a.name for a in c.client.agents()}
    # Like an audit log: who changed what, and who was refused.
    log = c.log("scheduler")
    assert "operator tester: scaled default worker=1" in log
    assert "refused Scale from" in log and "viewer may not scale" in log


def test_an_agent_certificate_may_not_say_hello_as_another_agent(deployed):
    c = deployed
    pids = {i.id: i.pid for i in c.client.instances("default")}
    with open_channel(c.listen, c.tls_for("agent", "agent-1")) as ch:
        call = pbg.AgentLinkStub(ch).Connect(iter([pb.AgentMessage(hello=pb.Hello(
            name="agent-2", capacity=100, address="127.0.0.1"))]), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may not connect as agent 'agent-2'" in e.value.details()
    agents = {a.name: a for a in c.client.agents()}
    assert agents["agent-2"].connected and agents["agent-1"].connected
    assert {i.id: i.pid for i in c.client.instances("default")} == pids
    # An agent started with another agent's certificate refuses to start, in one line.
    paths = c.tls_for("agent", "agent-1")
    r = subprocess.run([sys.executable, "-m", "agent", "--name", "agent-9", "--scheduler",
                        c.listen, "--tls-ca", paths.ca, "--tls-cert", paths.cert, "--tls-key",
                        paths.key, "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       cwd=ROOT, timeout=30)
    assert r.returncode == 1 and "names agent agent-1, not agent agent-9" in r.stdout + r.stderr


def test_the_agent_api_serves_only_the_scheduler(deployed):
    c = deployed
    request = pb.LogsRequest(app="default", tail=1)
    with open_channel(c.agent_api("agent-1"), None) as ch:
        assert code_of(lambda: list(pbg.AgentApiStub(ch).Logs(
            request, timeout=5))) == grpc.StatusCode.UNAVAILABLE
    with open_channel(c.agent_api("agent-1"), c.tls_for("operator", "tester"),
                      "agent-1.agent.formation") as ch:
        assert code_of(lambda: list(pbg.AgentApiStub(ch).Logs(
            request, timeout=5))) == grpc.StatusCode.PERMISSION_DENIED
    with open_channel(c.agent_api("agent-1"), c.tls_for("scheduler", "scheduler"),
                      "agent-1.agent.formation") as ch:
        list(pbg.AgentApiStub(ch).Logs(request, timeout=5))  # the scheduler may


def served_serial(address: str, paths: TlsPaths) -> int:
    """The serial number of the certificate the server presents to a new connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(paths.ca)
    ctx.load_cert_chain(paths.cert, paths.key)
    ctx.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname="scheduler.formation") as t:
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def replace(path: str, data: bytes) -> None:
    tmp = f"{path}.new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def test_rotation_new_connections_see_the_new_certificate_and_nothing_restarts(deployed):
    c = deployed
    me = c.tls_for("operator", "tester")
    own = c.tls_for("scheduler", "scheduler")
    old = served_serial(c.listen, me)
    pids = {i.id: (i.pid, i.restarts) for i in c.client.instances("default")}
    cert, key = pki.issue(c.certs.ca, c.certs.ca_key, "scheduler", "scheduler",
                          ["127.0.0.1"], days=90)
    new = x509.load_pem_x509_certificate(cert).serial_number
    replace(own.key, key)  # the key first: until the certificate follows, the pair is kept
    replace(own.cert, cert)
    wait_for(lambda: served_serial(c.listen, me) == new, 10, what="the new certificate")
    assert new != old
    expiry = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    wait_for(lambda: c.scrape("scheduler").get(
        'formation_tls_cert_expiry_timestamp_seconds{cert="own"}') == expiry, 10)
    c.ctl("scale", "worker=2")  # the old links and new calls both work
    c.wait_running({"worker.1", "worker.2"})
    after = {i.id: (i.pid, i.restarts) for i in c.client.instances("default")}
    assert after["worker.1"] == pids["worker.1"]
    assert all(a.connected for a in c.client.agents())
    # An agent takes new files on SIGHUP (its metric shows the new expiry).
    paths = c.tls_for("agent", "agent-1")
    cert, key = pki.issue(c.certs.ca, c.certs.ca_key, "agent", "agent-1", ["127.0.0.1"],
                          days=60)
    replace(paths.key, key)
    replace(paths.cert, cert)
    c.parts["agent-1"].proc.send_signal(signal.SIGHUP)
    expiry = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    wait_for(lambda: c.scrape("agent-1").get(
        'formation_tls_cert_expiry_timestamp_seconds{cert="own"}') == expiry, 10)
    assert c.parts["agent-1"].proc.poll() is None


def test_env_values_never_leak_into_logs_ps_metrics_or_discovery(deployed):
    c = deployed
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    c.ctl("deploy", os.path.join(ROOT, "examples", "Procfile"), "--env", f"SECRET={secret}",
          "--env", f"DATABASE_URL=postgres://u:{secret}@db/x")
    c.ctl("scale", "worker=2")

    from tests.cluster import procs

    def on_v2() -> dict | None:  # worker.1 may still run v1 while the rollout replaces it
        # The listing and /proc are read at two moments: ask both again until they agree.
        run = c.running()
        return run if set(run) == {"worker.1", "worker.2"} \
            and all(i.release == 2 for i in run.values()) \
            and all(procs.environ(i.pid).get("SECRET") == secret for i in run.values()) else None
    wait_for(on_v2, 30, what="both workers running v2 with the secret in their environment")
    import urllib.request
    seen = [c.ctl("ps", "--json").stdout, c.ctl("ps").stdout, c.ctl("formation", "--json").stdout,
            c.ctl("agents", "--json").stdout, c.log("scheduler"), c.log("agent-1"),
            c.log("agent-2")]
    for part in ("scheduler", "agent-1", "agent-2"):
        with urllib.request.urlopen(f"http://{c.metrics[part]}/metrics", timeout=5) as r:
            seen.append(r.read().decode())
    for path in ("/sd/agents", "/sd/instances"):
        with urllib.request.urlopen(f"http://{c.metrics['scheduler']}{path}", timeout=5) as r:
            seen.append(r.read().decode())
    assert not [s[:200] for s in seen if secret in s]


def test_secure_by_default_plaintext_listens_on_loopback_only(tmp_path):
    for argv in (["-m", "scheduler", "--listen", "0.0.0.0:0"],
                 ["-m", "agent", "--listen", "0.0.0.0:0", "--workdir", str(tmp_path)]):
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                           timeout=30, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("FORMATION_")})
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "--insecure" in r.stderr, r.stderr
    # Bad TLS files: one line, exit 1 (the daemon would serve nothing useful).
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n\x00\n")
    r = subprocess.run([sys.executable, "-m", "scheduler", "--listen", "127.0.0.1:0",
                        "--tls-ca", str(tmp_path / "junk.pem"), "--tls-cert",
                        str(tmp_path / "junk.pem"), "--tls-key", str(tmp_path / "junk.pem"),
                        "--etcd", "http://127.0.0.1:9"], capture_output=True, text=True,
                       cwd=ROOT, timeout=30)
    out = r.stdout + r.stderr  # the daemons log to stdout
    assert r.returncode == 1 and "Traceback" not in out and "not a PEM" in out, out
