"""The certificates of common/pki.py, read back with cryptography. No I/O but tmp files."""
from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from common import pki
from common.names import NAME_RE
from common.pki import CaError, Identity, PkiError

CA, CA_KEY = pki.make_ca()  # one CA for the module: a key per test would only cost time
CA_CERT = x509.load_pem_x509_certificate(CA)
CA_SKI = CA_CERT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def issued(role: str, name: str, sans: list[str] | None = None,
           days: int = 365) -> tuple[x509.Certificate, bytes, bytes]:
    cert_pem, key_pem = pki.issue(CA, CA_KEY, role, name, sans or [], days)
    return x509.load_pem_x509_certificate(cert_pem), cert_pem, key_pem


E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> E:
    return cert.extensions.get_extension_for_class(kind).value


@pytest.mark.parametrize("role", pki.ROLES)
def test_every_issued_certificate_has_the_shape_it_promises(role):
    cert, cert_pem, key_pem = issued(role, "n1")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.public_der(key.public_key()) == pki.public_der(cert.public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    basic = ext(cert, x509.BasicConstraints)
    assert basic.ca is False
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical
    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert ext(cert, x509.AuthorityKeyIdentifier).key_identifier == CA_SKI.digest
    usage = ext(cert, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign
    cert.verify_directly_issued_by(CA_CERT)
    assert cert.issuer == CA_CERT.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "n1"
    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == \
        [f"spiffe://formation/{role}/n1"]
    eku = list(ext(cert, x509.ExtendedKeyUsage))
    if role in pki.SERVER_ROLES:
        assert sans.get_values_for_type(x509.DNSName) == [f"{role}.formation",
                                                          f"n1.{role}.formation"]
        assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    else:  # a user's certificate: a client only, and it names no host
        assert sans.get_values_for_type(x509.DNSName) == []
        assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.cert_identity(cert_pem) == Identity(role, "n1")


def test_the_ca_is_a_ca():
    assert ext(CA_CERT, x509.BasicConstraints).ca is True
    usage = ext(CA_CERT, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    CA_CERT.verify_directly_issued_by(CA_CERT)
    assert pki.cert_identity(CA) is None


@pytest.mark.parametrize("role", pki.ROLES)
def test_san_addresses_and_names_are_added(role):
    cert, _, _ = issued(role, "n1", ["10.0.0.7", "::1", "Host.Example.com", "10.0.0.7",
                                     "*.apps.example.com"])
    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7"),
                                                        ipaddress.ip_address("::1")]
    dns = sans.get_values_for_type(x509.DNSName)
    assert dns[-2:] == ["host.example.com", "*.apps.example.com"]
    # a --san makes even a user's certificate usable by a server (curl, etcd)
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(ext(cert, x509.ExtendedKeyUsage))


@pytest.mark.parametrize("san", ["", "a..b", "-a.com", "a-.com", "a_b.com", "exa mple.com",
                                 "10.0.0.256", "1", "*", "*.com", "a.*.com", "é.com",
                                 "a\0b", "fe80::1%eth0", "x" * 64 + ".com", "a." * 130 + "com",
                                 "scheduler.formation", "a1.agent.formation", "formation",
                                 "*.agent.formation", "Scheduler.Formation"])
def test_bad_or_reserved_sans_are_refused(san):
    with pytest.raises(PkiError) as e:
        pki.issue(CA, CA_KEY, "agent", "a1", [san])
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_too_many_sans_are_refused():
    with pytest.raises(PkiError):
        pki.check_request("agent", "a1", [f"10.0.0.{i}" for i in range(pki.MAX_SANS + 1)])


@pytest.mark.parametrize("role,name", [("root", "a1"), ("Agent", "a1"), ("agent", "A1"),
                                       ("agent", ""), ("agent", "a/b"), ("agent", "a\0"),
                                       ("agent", "x" * 64), ("agent\0", "a1"), ("", "a1")])
def test_bad_roles_and_names_are_refused(role, name):
    with pytest.raises(PkiError) as e:
        pki.issue(CA, CA_KEY, role, name)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("days", [0, -1, pki.MAX_DAYS + 1, 10**100, True, 1.5,
                                  float("nan"), float("inf"), float("-inf"), "10"])
def test_bad_days_are_refused(days):
    with pytest.raises(PkiError):
        pki.issue(CA, CA_KEY, "agent", "a1", days=days)


@given(st.integers(1, 3000))
@settings(max_examples=10, deadline=None)
def test_validity_is_within_the_cas(days):
    cert, _, _ = issued("viewer", "v", days=days)
    assert CA_CERT.not_valid_before_utc <= cert.not_valid_before_utc
    assert cert.not_valid_after_utc <= CA_CERT.not_valid_after_utc
    length = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=days, minutes=-1) < length <= datetime.timedelta(days=days)


def test_a_certificate_never_outlives_its_ca():
    ca, ca_key = pki.make_ca(days=30)
    cert, _ = pki.issue(ca, ca_key, "agent", "a1", days=29)
    assert x509.load_pem_x509_certificate(cert).not_valid_after_utc <= \
        x509.load_pem_x509_certificate(ca).not_valid_after_utc
    with pytest.raises(PkiError) as e:
        pki.issue(ca, ca_key, "agent", "a1", days=31)
    assert not isinstance(e.value, CaError)  # a --days problem, not the CA's


def test_a_ca_not_yet_valid_gives_certificates_starting_with_it():
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    ca, ca_key = pki.make_ca(not_before=later)
    cert = x509.load_pem_x509_certificate(pki.issue(ca, ca_key, "agent", "a1")[0])
    assert cert.not_valid_before_utc >= x509.load_pem_x509_certificate(ca).not_valid_before_utc


def test_an_expired_ca_signs_nothing():
    ca, ca_key = pki.make_ca(days=1, not_before=datetime.datetime(2020, 1, 1,
                                                                  tzinfo=datetime.UTC))
    with pytest.raises(CaError, match="expired"):
        pki.issue(ca, ca_key, "agent", "a1")


def test_a_ca_key_that_is_not_the_cas_is_refused():
    _, other_key = pki.make_ca()
    with pytest.raises(CaError, match="does not belong"):
        pki.issue(CA, other_key, "agent", "a1")


def test_a_leaf_is_not_a_ca():
    _, leaf_pem, leaf_key = issued("agent", "a1")
    with pytest.raises(CaError, match="not a CA"):
        pki.issue(leaf_pem, leaf_key, "agent", "a2")


@pytest.mark.parametrize("cert,key", [(b"", CA_KEY), (CA, b""), (b"junk", b"junk"),
                                      (CA_KEY, CA), (CA, CA)])
def test_junk_ca_files_are_refused(cert, key):
    with pytest.raises(CaError) as e:
        pki.issue(cert, key, "agent", "a1")
    assert "\n" not in str(e.value)


def test_an_encrypted_ca_key_is_refused_in_one_line():
    key = serialization.load_pem_private_key(CA_KEY, password=None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(CaError) as e:
        pki.issue(CA, locked, "agent", "a1")
    assert "\n" not in str(e.value)


# ---- identities ---------------------------------------------------------------------------

@given(st.sampled_from(pki.ROLES), st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True))
def test_identity_uris_round_trip(role, name):
    assert pki.parse_identity(pki.identity_uri(role, name)) == Identity(role, name)


@given(st.sampled_from(pki.ROLES), st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True))
@settings(max_examples=15, deadline=None)
def test_cert_identity_round_trips(role, name):
    assert pki.cert_identity(issued(role, name)[1]) == Identity(role, name)


@given(st.builds(str.__add__, st.sampled_from(["", pki.URI_PREFIX, pki.URI_PREFIX + "agent/"]),
                 st.text(max_size=200)))
def test_parse_identity_of_hostile_strings(text):
    found = pki.parse_identity(text)
    if found is not None:  # only ever an exact, canonical identity
        assert pki.identity_uri(found.role, found.name) == text


@given(st.sampled_from(pki.ROLES), st.text(max_size=80))
def test_parse_identity_accepts_only_valid_names(role, name):
    found = pki.parse_identity(f"spiffe://formation/{role}/{name}")
    assert found == (Identity(role, name) if NAME_RE.fullmatch(name) else None)


@pytest.mark.parametrize("uri", ["spiffe://formation/agent", "spiffe://formation/agent/",
                                 "spiffe://formation/agent/a1/x", "spiffe://formation/root/a1",
                                 "spiffe://other/agent/a1", "SPIFFE://formation/agent/a1",
                                 "spiffe://formation/agent/A1", "spiffe://formation/agent/a1\n",
                                 "spiffe://formation//agent/a1", "spiffe://formation/agent/a%31",
                                 "spiffe://formation/agent/a1?x", "spiffe://formation/agent/a1#x",
                                 " spiffe://formation/agent/a1", ""])
def test_junk_uris_name_no_one(uri):
    assert pki.parse_identity(uri) is None


def test_cert_identity_of_junk_is_none():
    assert pki.cert_identity(b"") is None
    assert pki.cert_identity(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") \
        is None


# ---- files --------------------------------------------------------------------------------

def test_files_are_created_new_and_keys_private(tmp_path):
    old = os.umask(0)
    try:
        key, cert = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
        pki.write_private(key, b"k")
        pki.write_public(cert, b"c")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert).st_mode) == 0o644
    with pytest.raises(FileExistsError):
        pki.write_private(key, b"other")
    assert (tmp_path / "k.pem").read_bytes() == b"k"
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(FileExistsError):  # a planted symlink is never followed
        pki.write_private(str(tmp_path / "link"), b"k")
    assert not (tmp_path / "target").exists()
