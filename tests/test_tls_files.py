"""The TLS files a part is given, the roles' policy and ctl's context, without processes:
every bad file is one line and changes nothing; rotation takes only a whole pair."""
from __future__ import annotations

import datetime
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common import pki
from common.identity import Identity
from common.tls import Credentials, TlsError, TlsPaths, check_listen, load
from ctl import context
from ctl.devcerts import DevCerts
from proto import formation_pb2 as pb
from scheduler import authz


@pytest.fixture
def certs(tmp_path) -> DevCerts:
    return DevCerts(str(tmp_path / "tls"))


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_good_files_load_with_their_identity_and_expiry(certs):
    m = load(certs.issue("agent", "a1"))
    assert m.identity == Identity("agent", "a1")
    assert m.expiry > datetime.datetime.now(datetime.UTC).timestamp() + 29 * 86400
    assert m.ca_expiry > m.expiry


def test_bad_files_are_one_line_errors(certs, tmp_path):
    good = certs.issue("agent", "a1")
    other = DevCerts(str(tmp_path / "other")).issue("agent", "a1")
    now = datetime.datetime.now(datetime.UTC)
    old_cert, old_key = pki.issue(certs.ca, certs.ca_key, "agent", "old", days=1,
                                  not_before=now - datetime.timedelta(days=5))
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw"))
    cases = {
        "missing": (TlsPaths(good.ca, str(tmp_path / "nope.pem"), good.key), "cannot read"),
        "huge": (TlsPaths(good.ca, write(tmp_path / "huge.pem", b"A" * (pki.MAX_PEM_BYTES + 1)),
                          good.key), "larger than"),
        "NUL bytes": (TlsPaths(good.ca, write(tmp_path / "nul.pem", b"\0" * 100), good.key),
                      "not a PEM certificate"),
        "a key as certificate": (TlsPaths(good.ca, good.key, good.key), "not a PEM"),
        "a leaf as CA": (TlsPaths(good.cert, good.cert, good.key), "no CA certificate"),
        "another's key": (TlsPaths(good.ca, good.cert, other.key), "does not belong"),
        "encrypted key": (TlsPaths(good.ca, good.cert, write(tmp_path / "enc.pem", encrypted)),
                          "is encrypted"),
        "another CA": (TlsPaths(good.ca, other.cert, other.key), "not issued by the CA"),
        "expired": (TlsPaths(good.ca, write(tmp_path / "old.pem", old_cert),
                             write(tmp_path / "old-key.pem", old_key)), "expired on"),
    }
    for what, (paths, words) in cases.items():
        with pytest.raises(TlsError) as e:
            load(paths)
        assert words in str(e.value) and "\n" not in str(e.value), (what, str(e.value))


def test_a_ca_bundle_trusts_both_cas_and_expires_with_the_first(certs, tmp_path):
    other = DevCerts(str(tmp_path / "other"))
    short, _ = pki.make_ca("short-lived", days=100)
    bundle = write(tmp_path / "bundle.pem", certs.ca + other.ca + short)
    for paths in (certs.issue("agent", "a1"), other.issue("agent", "a2")):
        m = load(TlsPaths(bundle, paths.cert, paths.key))
        assert m.ca_expiry < datetime.datetime.now(datetime.UTC).timestamp() + 101 * 86400


def test_rotation_takes_a_whole_pair_only(certs, tmp_path):
    paths = certs.issue("scheduler", "s1")
    creds = Credentials(paths)
    first = creds.material
    assert not creds.reload()  # nothing changed: no re-read
    cert, key = pki.issue(certs.ca, certs.ca_key, "scheduler", "s1", days=10)
    write(paths.cert, cert)  # the certificate before its key: not a pair yet
    assert not creds.reload() and creds.material is first
    write(paths.key, key)
    assert creds.reload() and creds.material.cert == cert and creds.version == 2
    os.unlink(paths.key)  # a file gone: the material in use stays
    assert not creds.reload() and creds.material.cert == cert
    other = certs.issue("agent", "a1")  # another part's pair: a renewal keeps role and name
    write(paths.cert, open(other.cert, "rb").read())  # noqa: SIM115
    write(paths.key, open(other.key, "rb").read())  # noqa: SIM115
    assert not creds.reload() and creds.material.cert == cert


def test_the_listen_rule():
    check_listen("--listen", "127.0.0.1:7070", tls=False, insecure=False)
    check_listen("--listen", "localhost:7070", tls=False, insecure=False)
    check_listen("--listen", "[::1]:7070", tls=False, insecure=False)
    check_listen("--listen", "0.0.0.0:7070", tls=True, insecure=False)
    check_listen("--listen", "10.0.0.1:7070", tls=False, insecure=True)
    for address in ("0.0.0.0:7070", "10.0.0.1:7070", ":7070", "example.com:7070"):
        with pytest.raises(ValueError, match="--insecure"):
            check_listen("--listen", address, tls=False, insecure=False)


CONTROL = [m.name for m in pb.DESCRIPTOR.services_by_name["Control"].methods]


@pytest.mark.parametrize("role", ["operator", "viewer", "agent", "scheduler"])
def test_who_may_call_what(role):
    who = Identity(role, "x")
    allowed = {m for m in CONTROL if authz.control(m, who) is None}
    expected = {"operator": set(CONTROL), "viewer": set(authz.READ_ONLY)}.get(role, set())
    assert allowed == expected
    assert (authz.agent_link("Connect", who) is None) == (role == "agent")
    assert authz.control("Scale", None) is not None and authz.agent_link("Connect", None)
    if role == "viewer":
        assert authz.control("Scale", who) == "viewer may not scale"
        assert authz.control("Logs", who) == "viewer may not read logs"


def test_the_context_is_read_only_while_its_writer_lives(tmp_path, monkeypatch):
    where = tmp_path / "ctx" / "context.json"
    monkeypatch.setenv("FORMATION_CONTEXT", str(where))
    assert context.read() is None
    context.write(context.Context("127.0.0.1:7070", "ca", "cert", "key", os.getpid()))
    assert (where.stat().st_mode & 0o777) == 0o600
    assert context.read() == context.Context("127.0.0.1:7070", "ca", "cert", "key", os.getpid())
    context.remove(os.getpid() + 1)  # not its writer: stays
    assert where.exists()
    context.remove(os.getpid())
    assert not where.exists()
    dead = 2**22 + 1  # above pid_max's default: no such process
    for junk in (json.dumps({"scheduler": "h:1", "pid": dead}), "{", "[]", "\0" * 10,
                 json.dumps({"scheduler": 5, "pid": os.getpid()}),
                 json.dumps({"scheduler": "h:1", "pid": "1"}), "x" * (context.MAX_BYTES + 10)):
        where.write_text(junk)
        assert context.read() is None, junk
