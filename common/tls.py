"""Mutual TLS for every gRPC connection: the --tls-* flags, credentials that follow their files,
the peer's identity, and the secure-by-default rule for listening.

A daemon re-reads its certificate and key when the files change (checked at every new
connection, a stat of three files) or on SIGHUP; new connections use them, open ones keep
theirs. A pair that does not fit (a certificate written before its key) is not used: the old
one stays until the pair is whole.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Gauge

from common import certinfo
from common.identity import MAX_PEM_BYTES, Identity, parse_identity
from common.net import split_hostport

log = logging.getLogger("tls")

CERT_EXPIRY = Gauge("formation_tls_cert_expiry_timestamp_seconds",
                    "When a certificate this process uses expires (Unix seconds): its own "
                    "(cert=\"own\") and the CA it trusts (cert=\"ca\")", ["cert"])


class TlsError(ValueError):
    """TLS files that cannot be used, with a one-line reason."""


@dataclass(frozen=True)
class TlsPaths:
    ca: str
    cert: str
    key: str


def add_flags(p: argparse.ArgumentParser, daemon: bool = True) -> None:
    """--tls-ca, --tls-cert, --tls-key (and --insecure for a daemon)."""
    env = os.environ.get
    p.add_argument("--tls-ca", metavar="FILE", default=env("FORMATION_TLS_CA", ""),
                   help="the cluster CA certificate (env FORMATION_TLS_CA)")
    p.add_argument("--tls-cert", metavar="FILE", default=env("FORMATION_TLS_CERT", ""),
                   help="this part's certificate (env FORMATION_TLS_CERT)")
    p.add_argument("--tls-key", metavar="FILE", default=env("FORMATION_TLS_KEY", ""),
                   help="this part's private key (env FORMATION_TLS_KEY)")
    if daemon:
        p.add_argument("--insecure", action="store_true",
                       default=env("FORMATION_INSECURE", "") in ("1", "true", "yes"),
                       help="without TLS, listen on addresses other than loopback anyway: "
                            "only on a network you trust (env FORMATION_INSECURE=1)")


def paths_from(args: argparse.Namespace) -> TlsPaths | None:
    """The three files, or None for no TLS; ValueError if only some are given."""
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("give --tls-ca, --tls-cert and --tls-key together")
    return TlsPaths(args.tls_ca, args.tls_cert, args.tls_key)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(flag: str, address: str, tls: bool, insecure: bool) -> None:
    """Secure by default: without TLS, only loopback, unless --insecure. ValueError if not."""
    host, _ = split_hostport(address)
    if not tls and not insecure and not is_loopback(host):
        raise ValueError(f"{flag} {address} is not loopback and there is no TLS: give "
                         "--tls-ca/--tls-cert/--tls-key, or --insecure to serve plaintext "
                         "on a network you trust")


def read_pem(path: str, what: str) -> bytes:
    """A PEM file's bytes, at most MAX_PEM_BYTES; TlsError with one line naming `what`."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as e:
        raise TlsError(f"cannot read the {what} {path}: {e.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"the {what} {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


@dataclass(frozen=True)
class Material:
    """One loaded and checked set: CA, certificate and key (PEM), and what they say."""
    ca: bytes
    cert: bytes
    key: bytes
    identity: Identity | None
    expiry: float
    ca_expiry: float


def load(paths: TlsPaths, chain: bool = True) -> Material:
    """Read and check the three files; TlsError with one line if they do not fit together.

    The CA file may hold several CA certificates (while a CA is being replaced, docs/
    security.md): peers of any of them are trusted, and its expiry is the earliest. `chain`
    checks that the CA signed the certificate (a handshake in memory, ~7 ms): a daemon does at
    start and at each rotation; ctl, once per command, leaves it to the scheduler's handshake."""
    ca, cert, key = (read_pem(paths.ca, "CA certificate"), read_pem(paths.cert, "certificate"),
                     read_pem(paths.key, "key"))
    try:
        own = certinfo.leaf(paths.cert)
        cas = certinfo.authorities(ca, paths.ca)
        certinfo.check_pair(paths.cert, paths.key)
    except certinfo.CertError as e:
        raise TlsError(str(e)) from None
    now = time.time()
    if own.not_after < now:
        raise TlsError(f"the certificate {paths.cert} expired on {_day(own.not_after)}")
    if own.not_before > now:
        raise TlsError(f"the certificate {paths.cert} is not valid before "
                       f"{_day(own.not_before)}")
    try:
        if chain:
            certinfo.check_chain(paths.cert, paths.key, ca)
    except certinfo.CertError as e:
        raise TlsError(f"the certificate {paths.cert} is not issued by the CA {paths.ca} "
                       f"({str(e).rpartition(': ')[2]})") from None
    return Material(ca, cert, key, own.identity, own.not_after,
                    min(c.not_after for c in cas))


def _stamp(paths: TlsPaths) -> tuple:
    out: list[tuple[int, int, int] | None] = []
    for path in (paths.ca, paths.cert, paths.key):
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class Credentials:
    """This process's TLS material, re-read when its files change (or reload(force=True))."""

    def __init__(self, paths: TlsPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._stamp = _stamp(paths)
        self.material = load(paths)  # TlsError at start-up: the daemon refuses to start
        self.version = 1
        self._served = 0
        self._gauge()

    @property
    def identity(self) -> Identity | None:
        return self.material.identity

    def _gauge(self) -> None:
        CERT_EXPIRY.labels("own").set(self.material.expiry)
        CERT_EXPIRY.labels("ca").set(self.material.ca_expiry)

    def reload(self, force: bool = False) -> bool:
        """Re-read the files if they changed (or force); True if new material is in use."""
        stamp = _stamp(self.paths)
        with self._lock:
            if stamp == self._stamp and not force:
                return False
            self._stamp = stamp
            try:
                material = load(self.paths)
            except TlsError as e:
                log.warning("TLS files changed but cannot be used yet (keeping the old): %s", e)
                return False
            if material == self.material:
                return False
            if material.identity != self.material.identity:  # a renewal, not a new part
                log.warning("TLS files changed to a certificate of %s, not of %s: not used",
                            material.identity, self.material.identity)
                return False
            self.material = material
            self.version += 1
        log.info("TLS certificate reloaded from %s (%s, expires %s)", self.paths.cert,
                 material.identity, _day(material.expiry))
        self._gauge()
        return True

    def _server_config(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called at each handshake: new material, or None for 'unchanged'."""
        try:
            self.reload()
        except Exception:  # noqa: BLE001 - a fetcher that raises would fail the handshake
            log.exception("checking the TLS files")
        if self._served == self.version:
            return None
        self._served = self.version
        m = self.material
        return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS for a server: a client must show a certificate of the same CA."""
        initial = self._server_config()
        assert initial is not None
        return grpc.dynamic_ssl_server_credentials(initial, self._server_config,
                                                   require_client_authentication=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """For a new client connection: the material as it is now."""
        self.reload()
        m = self.material
        return grpc.ssl_channel_credentials(m.ca, m.key, m.cert)


def _day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


def target(role_host: str) -> list[tuple[str, str]]:
    """Channel options that check the server's certificate against role_host (for example
    `scheduler.formation`), whatever address was dialled: the certificate's role, not its IP."""
    return [("grpc.ssl_target_name_override", role_host)]


def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """The caller's identity from its verified certificate; None on a plaintext call or a
    certificate that names no formation identity."""
    values = context.auth_context().get("peer_spiffe_id")
    if not values:
        return None
    try:
        return parse_identity(values[0].decode("ascii"))
    except UnicodeDecodeError:
        return None


# Metadata of a call a scheduler replica forwards to the leader: who the caller is (the
# identity URI of its certificate). Believed only from a peer holding a scheduler's
# certificate, which checked the caller's own before it forwarded.
CALLER_KEY = "formation-caller"


def caller_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """Who made the call: the peer's certificate, or, when the peer is a scheduler replica
    forwarding a call, the caller it names (None if it names none that is valid)."""
    who = peer_identity(context)
    if who is None or who.role != "scheduler":
        return who
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_KEY:
            return parse_identity(value) if isinstance(value, str) else None
    return who


__all__ = ["CALLER_KEY", "CERT_EXPIRY", "Credentials", "Material", "TlsError", "TlsPaths",
           "add_flags", "check_listen", "is_loopback", "load", "paths_from", "peer_identity",
           "caller_identity",
           "target"]
