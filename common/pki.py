"""The cluster's certificates: a CA, and certificates that bind a role and a name.

A certificate issued here carries its identity twice, for two readers:
- a URI SAN `spiffe://formation/ROLE/NAME`, which the scheduler and the agents read from the
  peer of a call (gRPC reports it as the peer's `peer_spiffe_id`) to authorize it;
- DNS SANs `ROLE.formation` and `NAME.ROLE.formation` (servers only), which a client names as the
  TLS target, so that it checks the role (`scheduler.formation`) or the very peer it meant
  (`a1.agent.formation`), whatever address it dialled: Nomad's `server.global.nomad`.
`--san` adds host names and IP addresses for other tools (curl, etcd).

Keys are EC P-256; certificates carry SKI/AKI and key usages; `operator` and `viewer`
certificates are for clients only.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import identity
from common.identity import (
    ROLES,
    SERVER_ROLES,
    TRUST_DOMAIN,
    Identity,
    identity_uri,
    parse_identity,
    role_host,
)
from common.names import check_name

# The identity names stay importable from here too.
MAX_PEM_BYTES = identity.MAX_PEM_BYTES
URI_PREFIX = identity.URI_PREFIX

CA_DAYS = 3650
MAX_DAYS = 3650
MAX_SANS = 64


class PkiError(ValueError):
    """A one-line reason: bad input, an unreadable file, a certificate that does not fit."""


class CaError(PkiError):
    """The CA itself cannot sign: not a CA, a key that is not its own, expired."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def make_ca(common_name: str = "Formation cluster CA", days: int = CA_DAYS,
            not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= CA_DAYS:
        raise PkiError(f"a CA lives from 1 to {CA_DAYS} days, not {days!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = (not_before or _now()) - datetime.timedelta(minutes=5)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _san(text: str) -> x509.GeneralName:
    """An IP address or a DNS name from --san."""
    shown = repr(text[:80]) + ("…" if len(text) > 80 else "")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise PkiError(f"--san {shown}: an IPv6 address with a zone cannot be certified")
        return x509.IPAddress(ip)
    host = text.lower()
    labels = host.split(".")
    if not (len(host) <= 253 and host.isascii()
            and all(_LABEL.fullmatch(label) for label in labels[int(labels[0] == "*"):])
            and not labels[-1].isdigit()  # 10.0.0.256 is a mistyped address, not a name
            and (labels[0] != "*" or len(labels) >= 3)):
        raise PkiError(f"--san {shown} is neither an IP address nor a host name")
    if labels[-1] == TRUST_DOMAIN:
        raise PkiError(f"--san {shown}: names under .{TRUST_DOMAIN} are given by the role "
                       "(a certificate must not answer for another role or name)")
    return x509.DNSName(host)


def check_request(role: str, name: str, sans: Sequence[str] = (),
                  days: int = 365) -> list[x509.GeneralName]:
    """Check what `issue` is asked for, before any file is read: the extra SANs, or PkiError."""
    if not isinstance(role, str) or role not in ROLES:
        raise PkiError(f"role must be one of {', '.join(ROLES)}, not {str(role)[:40]!r}")
    try:
        check_name(role, name)
    except ValueError as e:
        raise PkiError(str(e)) from None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise PkiError(f"--days must be a whole number from 1 to {MAX_DAYS}, not {days!r}")
    if len(sans) > MAX_SANS:
        raise PkiError(f"at most {MAX_SANS} --san, not {len(sans)}")
    out: list[x509.GeneralName] = []
    for s in sans:
        if (general := _san(s)) not in out:
            out.append(general)
    return out


def public_der(public_key: Any) -> bytes:
    """A public key's SubjectPublicKeyInfo, to compare a key with a certificate."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_ca(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate,
                                                       ec.EllipticCurvePrivateKey]:
    """The CA certificate and its key, checked to be a CA and a pair; CaError if not."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert_key = public_der(cert.public_key())
    # TypeError: an encrypted key; UnsupportedAlgorithm: a key type this build cannot read
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise CaError(f"not a PEM CA certificate and unencrypted key: {reason}") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        is_ca = False
    if not is_ca:
        raise CaError("the CA certificate is not a CA (no BasicConstraints CA:TRUE)")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            public_der(key.public_key()) != cert_key):
        raise CaError("the CA key does not belong to the CA certificate")
    return cert, key


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    """The CA's SKI, as it states it (or as RFC 5280 would compute it, if it states none)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension):
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def issue(ca_pem: bytes, ca_key_pem: bytes, role: str, name: str, sans: Sequence[str] = (),
          days: int = 365, not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A certificate for NAME in ROLE, signed by the CA: (certificate PEM, key PEM).
    PkiError for a bad request; CaError for a CA that cannot sign."""
    extra = check_request(role, name, sans, days)
    ca_cert, ca_key = load_ca(ca_pem, ca_key_pem)
    now = not_before or _now()
    if ca_cert.not_valid_after_utc <= now:
        raise CaError(f"the CA expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}: make a new one")
    # Never valid before the CA is: a verifier would refuse the chain in that gap.
    start = max(now - datetime.timedelta(minutes=5), ca_cert.not_valid_before_utc)
    end = now + datetime.timedelta(days=days)
    if end > ca_cert.not_valid_after_utc:
        raise PkiError(f"--days {days} ends after the CA does "
                       f"({ca_cert.not_valid_after_utc:%Y-%m-%d}): use fewer days or a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    server = role in SERVER_ROLES
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(role, name))]
    if server:
        names += [x509.DNSName(role_host(role)), x509.DNSName(role_host(role, name))]
    names += [n for n in extra if n not in names]  # the role's own names first, no repeats
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH]
                                                   if server or extra else [])
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = _ski(ca_cert)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def cert_identity(cert_pem: bytes) -> Identity | None:
    """The identity a certificate is bound to (its formation URI SAN), or None (also for
    something that is not a certificate, or one with two identities)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        return None
    found = [i for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
             if (i := parse_identity(u)) is not None]
    return found[0] if len(found) == 1 else None


def expiry(cert_pem: bytes) -> float:
    """When the (first) certificate in cert_pem expires, in Unix seconds."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def _write_new(path: str, data: bytes, mode: int, exact: bool) -> None:
    """Create path (never an existing file or a symlink: O_EXCL) and write data; a file that
    could not be written whole is removed, so no half a key or certificate is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if exact:
                os.fchmod(f.fileno(), mode)  # a key is 0600 whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def write_private(path: str, data: bytes) -> None:
    """Create path with mode 0600 (never an existing file: O_EXCL) and write data."""
    _write_new(path, data, 0o600, exact=True)


def write_public(path: str, data: bytes) -> None:
    """Create path with mode 0644 (less if the umask says so) and write data."""
    _write_new(path, data, 0o644, exact=False)
