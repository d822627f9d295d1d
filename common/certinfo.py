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


def check_pair(cert_path: str, key_path: str) -> None:
    """CertError unless the key belongs to the certificate."""
    def no_password() -> bytes:  # asked only for an encrypted key: never prompt
        raise CertError(f"the key {key_path} is encrypted: give an unencrypted key (mode 0600)")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=no_password)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e):
            raise CertError(f"the key {key_path} does not belong to the certificate "
                            f"{cert_path}") from None
        raise CertError(f"{key_path} is not a PEM private key ({_reason(e)})") from None
    except OSError as e:
        raise CertError(f"cannot read {key_path}: {e.strerror}") from None


def check_chain(cert_path: str, key_path: str, ca_pem: bytes) -> None:
    """CertError unless a peer trusting ca_pem would accept the certificate as a client's
    (its signature, its dates, its key usage): a TLS handshake with itself, in memory."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cadata=ca_pem.decode("ascii"))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # only the server's view of the client matters here
    client.load_cert_chain(cert_path, key_path)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = [server.wrap_bio(to_server, to_client, server_side=True),
            client.wrap_bio(to_client, to_server)]
    done = [False, False]
    for _ in range(10):  # a handshake takes a few flights
        for i, end in enumerate(ends):
            if done[i]:
                continue
            try:
                end.do_handshake()
                done[i] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as e:
                if i == 1:  # the client sees the server's refusal as an alert
                    continue
                raise CertError(f"{cert_path} is not accepted with the CA: {_reason(e)}"
                                ) from None
        if all(done):
            # TLS 1.3: the server checks the client's certificate after the client finished.
            try:
                ends[0].read(1)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
            except ssl.SSLError as e:
                raise CertError(f"{cert_path} is not accepted with the CA: {_reason(e)}"
                                ) from None
            return
    raise CertError(f"{cert_path}: the check of its chain did not finish")


def _reason(e: Exception) -> str:
    parts: list[object] = list(e.args)
    while parts and isinstance(parts[-1], tuple):  # ssl nests its message in tuples
        parts = list(parts[-1])
    text = str(parts[-1]) if parts else ""
    return text.splitlines()[0][:120] if text.strip() else type(e).__name__
