"""What a daemon needs to know of its TLS files, read with the standard library's `ssl`.

The daemons do not import `cryptography` (about 12 MiB of resident memory per process, more
than the rest of an idle agent's growth with 200 instances): OpenSSL, which `ssl` already
loads, decodes the certificates and checks that a key belongs to its certificate. `ctl tls`
makes certificates with `cryptography` (common/pki.py).
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from common.identity import Identity, parse_identity

DistinguishedName = tuple


class CertError(ValueError):
    """A file that is not what it should be, in one line."""


@dataclass(frozen=True)
class CertInfo:
    subject: DistinguishedName
    issuer: DistinguishedName
    not_before: float
    not_after: float
    uris: tuple[str, ...]

    @property
    def identity(self) -> Identity | None:
        """The formation identity the certificate is bound to (exactly one), or None."""
        found = [i for u in self.uris if (i := parse_identity(u)) is not None]
        return found[0] if len(found) == 1 else None


def _info(decoded: dict[str, Any]) -> CertInfo:
    return CertInfo(decoded.get("subject", ()), decoded.get("issuer", ()),
                    ssl.cert_time_to_seconds(decoded["notBefore"]),
                    ssl.cert_time_to_seconds(decoded["notAfter"]),
                    tuple(v for k, v in decoded.get("subjectAltName", ()) if k == "URI"))


def leaf(path: str) -> CertInfo:
    """The first certificate of a PEM file (a daemon's own)."""
    try:
        # The one decoder of a certificate `ssl` has; private, but there since Python 2.7 and
        # what the standard library's own tests use.
        return _info(ssl._ssl._test_decode_cert(path))  # type: ignore[attr-defined]
    except (ssl.SSLError, KeyError, ValueError) as e:
        raise CertError(f"{path} is not a PEM certificate ({_reason(e)})") from None


def authorities(pem: bytes, path: str) -> list[CertInfo]:
    """Every CA certificate in a PEM bundle; CertError if there is none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=pem.decode("ascii"))
        found = [_info(d) for d in ctx.get_ca_certs()]  # CA certificates only
    except (ssl.SSLError, UnicodeDecodeError, KeyError, ValueError) as e:
        raise CertError(f"{path} is not a PEM CA certificate ({_reason(e)})") from None
    if not found:
        raise CertError(f"{path} holds no CA certificate")
    return found


def _no_password() -> bytes:
    raise CertError("the key is encrypted: give an unencrypted key (mode 0600)")


def check_pair(cert_path: str, key_path: str) -> None:
    """CertError unless the key belongs to the certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e):
            raise CertError(f"the key {key_path} does not belong to the certificate "
                            f"{cert_path}") from None
        raise CertError(f"{key_path} is not a PEM private key ({_reason(e)})") from None
    except OSError as e:
        raise CertError(f"cannot read {key_path}: {e.strerror}") from None


def _reason(e: Exception) -> str:
    parts: list[object] = list(e.args)
    while parts and isinstance(parts[-1], tuple):  # ssl nests its message in tuples
        parts = list(parts[-1])
    text = str(parts[-1]) if parts else ""
    return text.splitlines()[0][:120] if text.strip() else type(e).__name__
