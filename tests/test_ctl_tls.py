"""`ctl tls init|issue` as a user runs it (`python -m ctl` in a temporary directory): the files
and their modes, never overwriting, exit codes and one-line errors, nothing written on failure,
the --json shapes, and openssl's opinion of the result."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from common import pki
from common.pki import Identity
from ctl import tls
from ctl.main import main

ROOT = Path(__file__).resolve().parent.parent
# No scheduler anywhere: `ctl tls` must not need one.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "FORMATION_SCHEDULER": "10.255.255.1:1"}


def ctl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=30)


def one_line(r: subprocess.CompletedProcess) -> bool:
    return (r.stderr.count("\n") == 1 and r.stderr.startswith("ctl: ") and r.stdout == ""
            and len(r.stderr) < 400)


def files(d: Path) -> dict[str, bytes]:
    """Everything under d (a symlink as where it points), to show nothing changed."""
    return {str(p.relative_to(d)): os.readlink(p).encode() if p.is_symlink() else
            p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(d.rglob("*"))}


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(scope="module")
def made_ca(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ca")
    r = ctl(base, "tls", "init")
    assert r.returncode == 0, r.stderr
    return base / "formation-tls"


@pytest.fixture
def ca_dir(made_ca, tmp_path) -> Path:
    """A copy of one CA made by `ctl tls init`, in this test's own directory."""
    shutil.copytree(made_ca, tmp_path / "formation-tls")
    return tmp_path / "formation-tls"


# ---- ctl tls init -------------------------------------------------------------------------

def test_init_makes_a_private_ca(made_ca):
    assert mode(made_ca) == 0o700
    assert mode(made_ca / "ca-key.pem") == 0o600
    assert sorted(p.name for p in made_ca.iterdir()) == ["ca-key.pem", "ca.pem"]
    cert, _ = pki.load_ca((made_ca / "ca.pem").read_bytes(), (made_ca / "ca-key.pem").read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == \
        datetime.timedelta(days=pki.CA_DAYS)


def test_init_says_what_it_wrote_and_json_has_its_shape(tmp_path):
    r = ctl(tmp_path, "tls", "init", "--dir", "a/b")  # parents made too
    assert r.returncode == 0 and r.stderr == ""
    assert "a/b/ca.pem" in r.stdout and "a/b/ca-key.pem" in r.stdout and "expires" in r.stdout
    assert mode(tmp_path / "a" / "b") == 0o700
    r = ctl(tmp_path, "--json", "tls", "init", "--dir", "c")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"ca": "c/ca.pem", "key": "c/ca-key.pem", "expires": out["expires"]}
    ca = x509.load_pem_x509_certificate((tmp_path / "c" / "ca.pem").read_bytes())
    assert datetime.datetime.fromisoformat(out["expires"]) == ca.not_valid_after_utc.replace(
        microsecond=0)


@pytest.mark.parametrize("present", ["ca.pem", "ca-key.pem"])
def test_init_never_overwrites(ca_dir, present):
    (ca_dir / ({"ca.pem", "ca-key.pem"} - {present}).pop()).unlink()
    before = files(ca_dir)
    r = ctl(ca_dir.parent, "tls", "init")
    assert r.returncode == 1 and one_line(r), r
    assert present in r.stderr and "exists" in r.stderr
    assert files(ca_dir) == before


def test_init_into_a_file_or_an_existing_directory(tmp_path):
    (tmp_path / "afile").write_text("mine")
    r = ctl(tmp_path, "tls", "init", "--dir", "afile")
    assert r.returncode == 1 and one_line(r) and "not a directory" in r.stderr, r
    assert (tmp_path / "afile").read_text() == "mine"
    (tmp_path / "open").mkdir(mode=0o755)
    assert ctl(tmp_path, "tls", "init", "--dir", "open").returncode == 0
    assert mode(tmp_path / "open" / "ca-key.pem") == 0o600


# ---- ctl tls issue ------------------------------------------------------------------------

@pytest.mark.parametrize("role", pki.ROLES)
def test_issue_writes_a_certificate_of_the_ca(ca_dir, role):
    r = ctl(ca_dir.parent, "tls", "issue", role, "n1", "--san", "10.1.2.3", "--days", "30")
    assert r.returncode == 0 and r.stderr == "", r
    assert f"{role} n1" in r.stdout and "formation-tls/n1.pem" in r.stdout
    assert "formation-tls/n1-key.pem" in r.stdout
    assert mode(ca_dir / "n1-key.pem") == 0o600
    cert_pem = (ca_dir / "n1.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes()))
    assert pki.cert_identity(cert_pem) == Identity(role, "n1")
    assert datetime.timedelta(days=29) < cert.not_valid_after_utc - cert.not_valid_before_utc \
        <= datetime.timedelta(days=30, minutes=6)


def test_issue_json_shape(ca_dir):
    r = ctl(ca_dir.parent, "tls", "issue", "agent", "a1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"cert": "formation-tls/a1.pem", "key": "formation-tls/a1-key.pem",
                   "role": "agent", "name": "a1", "expires": out["expires"]}
    cert = x509.load_pem_x509_certificate((ca_dir / "a1.pem").read_bytes())
    assert datetime.datetime.fromisoformat(out["expires"]) == cert.not_valid_after_utc.replace(
        microsecond=0)
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > \
        datetime.timedelta(days=364)  # the default: 365 days


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl")
def test_openssl_verifies_what_ctl_issues(ca_dir):
    for role, name in (("scheduler", "s1"), ("agent", "a1"), ("viewer", "v1")):
        assert ctl(ca_dir.parent, "tls", "issue", role, name).returncode == 0
        r = subprocess.run(["openssl", "verify", "-CAfile", "ca.pem", f"{name}.pem"],
                           capture_output=True, text=True, cwd=ca_dir, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == f"{name}.pem: OK", r


@pytest.mark.parametrize("present", ["a1.pem", "a1-key.pem"])
def test_issue_never_overwrites(ca_dir, present):
    (ca_dir / present).write_text("mine")
    before = files(ca_dir)
    r = ctl(ca_dir.parent, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r) and present in r.stderr, r
    assert files(ca_dir) == before


def test_a_symlink_planted_at_the_key_path_is_not_followed(ca_dir, tmp_path):
    (ca_dir / "a1-key.pem").symlink_to(tmp_path / "stolen")
    before = files(ca_dir)
    r = ctl(ca_dir.parent, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r), r
    assert not (tmp_path / "stolen").exists() and files(ca_dir) == before


def test_issue_without_a_ca_says_to_init(tmp_path):
    r = ctl(tmp_path, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r) and "ctl tls init" in r.stderr, r
    (tmp_path / "formation-tls").mkdir()
    (tmp_path / "formation-tls" / "ca.pem").write_text("")  # half a CA is no CA either
    r = ctl(tmp_path, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r) and "ca-key.pem" in r.stderr, r
    assert files(tmp_path) == {"formation-tls": b"<dir>", "formation-tls/ca.pem": b""}


def test_a_ca_key_that_does_not_match_is_refused(ca_dir, tmp_path):
    _, other_key = pki.make_ca()
    (ca_dir / "ca-key.pem").write_bytes(other_key)
    before = files(ca_dir)
    r = ctl(ca_dir.parent, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r) and "does not belong" in r.stderr, r
    assert files(ca_dir) == before


@pytest.mark.parametrize("plant", ["fifo", "dir", "huge", "junk"])
def test_ca_files_that_are_not_pem_files_are_refused(ca_dir, plant):
    path = ca_dir / "ca.pem"
    path.unlink()
    if plant == "fifo":
        os.mkfifo(path)  # must not hang reading it
    elif plant == "dir":
        path.mkdir()
    else:
        path.write_bytes(b"x" * (pki.MAX_PEM_BYTES + 1) if plant == "huge" else b"junk\n")
    r = ctl(ca_dir.parent, "tls", "issue", "agent", "a1")
    assert r.returncode == 1 and one_line(r), r
    assert not (ca_dir / "a1.pem").exists() and not (ca_dir / "a1-key.pem").exists()


def test_days_past_the_cas_expiry_is_a_usage_error(tmp_path):
    d = tmp_path / "formation-tls"
    d.mkdir()
    cert, key = pki.make_ca(days=30)
    pki.write_public(str(d / "ca.pem"), cert)
    pki.write_private(str(d / "ca-key.pem"), key)
    r = ctl(tmp_path, "tls", "issue", "agent", "a1", "--days", "31")
    assert r.returncode == 2 and one_line(r) and "--days" in r.stderr, r
    assert sorted(p.name for p in d.iterdir()) == ["ca-key.pem", "ca.pem"]
    assert ctl(tmp_path, "tls", "issue", "agent", "a1", "--days", "29").returncode == 0


BAD = [["tls"], ["tls", "issue"], ["tls", "issue", "agent"], ["tls", "frob"],
       ["tls", "issue", "root", "a1"], ["tls", "issue", "Agent", "a1"],
       ["tls", "issue", "agent", "A1"], ["tls", "issue", "agent", "../a1"],
       ["tls", "issue", "agent", "a1/b"], ["tls", "issue", "agent", "x" * 100_000],
       ["tls", "issue", "agent", "a1", "--days", "0"],
       ["tls", "issue", "agent", "a1", "--days", "-1"],
       ["tls", "issue", "agent", "a1", "--days", "3651"],
       ["tls", "issue", "agent", "a1", "--days", "nan"],
       ["tls", "issue", "agent", "a1", "--days", "inf"],
       ["tls", "issue", "agent", "a1", "--days", "1e3"],
       ["tls", "issue", "agent", "a1", "--days", "1.5"],
       ["tls", "issue", "agent", "a1", "--days", "٣"],
       ["tls", "issue", "agent", "a1", "--days", "9" * 50_000],
       ["tls", "issue", "agent", "a1", "--days", ""],
       ["tls", "issue", "agent", "a1", "--san", "scheduler.formation"],
       ["tls", "issue", "agent", "a1", "--san", "not a host"],
       ["tls", "issue", "agent", "a1", "--san", "10.0.0.300"],
       ["tls", "issue", "agent", "a1", "--san", "h" * 100_000],
       ["tls", "issue", "agent", "a1", "--dir", ""],
       ["tls", "init", "--dir", ""]]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a)[:40])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(ca_dir, args):
    before = files(ca_dir.parent)
    r = ctl(ca_dir.parent, *args)
    assert r.returncode == 2 and one_line(r), r.stderr[:500]
    assert files(ca_dir.parent) == before


@pytest.mark.parametrize("args", [["tls", "init", "--dir", "a\0b"],
                                  ["tls", "issue", "agent", "a\0", "--dir", "x"],
                                  ["tls", "issue", "agent", "a1", "--dir", "x\0"],
                                  ["tls", "issue", "agent", "a1", "--san", "h\0.com"]])
def test_nul_bytes_are_usage_errors(args, tmp_path, monkeypatch, capsys):
    # argv cannot carry NUL: only a caller in the same process can, so call main() itself.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctl: ")
    assert list(tmp_path.iterdir()) == []


def test_if_the_second_file_cannot_be_written_the_first_is_removed(ca_dir, monkeypatch,
                                                                     capsys):
    def full(path: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pki, "write_public", full)
    monkeypatch.chdir(ca_dir.parent)
    before = files(ca_dir)
    with pytest.raises(SystemExit) as e:
        main(["tls", "issue", "agent", "a1"])
    assert e.value.code == 1
    assert "No space left" in capsys.readouterr().err
    assert files(ca_dir) == before


def test_paths_are_shown_safely():
    assert tls.shown("a\x1b[31mb\udcff") == "a\\x1b[31mb\\xff"
    assert len(tls.shown("x" * 10_000)) <= tls.SHOWN_MAX + 1
