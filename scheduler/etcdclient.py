"""etcd over TLS and with a user: aetcd 1.0.0 dials only plaintext, so `EtcdClient` is aetcd's
client with a `connect()` that opens a TLS channel; the --etcd-* flags and their checks.

The TLS files are read at every (re)connect, so a renewed certificate is used from the next
reconnect on; a user's token is fetched at every connect, so a reconnect re-authenticates
(the Store reconnects when etcd says a token expired).
"""
from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.watcher
import grpc

from common import certinfo
from common.tls import CERT_EXPIRY, TlsError, TlsPaths, load, read_pem

PASSWORD_ENV = "FORMATION_ETCD_PASSWORD"


class Endpoint(NamedTuple):
    host: str
    port: int
    tls: bool = False


def parse_endpoints(urls: str, tls: bool = False) -> list[Endpoint]:
    """`https://h1:2379,https://h2:2379` -> [Endpoint(h1, 2379, True), ...]; a bare HOST:PORT
    is https if `tls` (TLS files are given), else http. ValueError with one line for another
    scheme, a bad host or port, or http mixed with https."""
    out = []
    for url in filter(None, (u.strip() for u in urls.split(","))):
        scheme, sep, _ = url.partition("://")
        scheme = scheme.lower() if sep else ("https" if tls else "http")
        if scheme not in ("http", "https"):
            raise ValueError(f"etcd URL {url[:80]!r}: the scheme must be http or https")
        try:
            parts = urlsplit(url if sep else f"{scheme}://{url}")
            port = parts.port or 2379
        except ValueError:
            raise ValueError(f"etcd URL {url[:80]!r}: invalid port") from None
        if not parts.hostname:
            raise ValueError(f"invalid etcd URL {url[:80]!r}")
        out.append(Endpoint(parts.hostname, port, scheme == "https"))
    if not out:
        raise ValueError("no etcd URL given")
    if len({e.tls for e in out}) > 1:
        raise ValueError("etcd URLs mix http:// and https://: use one for all")
    return out


@dataclass(frozen=True)
class EtcdAuth:
    """How the scheduler proves itself to etcd: TLS files (paths) and a user."""
    ca: str = ""     # the CA that issued etcd's certificate (and the client's); "" = system roots
    cert: str = ""   # the client certificate (etcd's --client-cert-auth), with its key
    key: str = ""
    user: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback

    @property
    def tls(self) -> bool:
        """True if TLS files are given (an https:// endpoint is TLS even without them)."""
        return bool(self.ca or self.cert or self.key)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for grpc.ssl_channel_credentials (None: the default, or no client cert)."""
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


def load_tls(auth: EtcdAuth) -> TlsMaterial:
    """Read and check the files (TlsError, one line, if unusable) and export their expiry."""
    if auth.cert:
        m = load(TlsPaths(auth.ca, auth.cert, auth.key))  # key fits cert, cert issued by CA
        CERT_EXPIRY.labels("etcd").set(m.expiry)
        CERT_EXPIRY.labels("etcd-ca").set(m.ca_expiry)
        return TlsMaterial(m.ca, m.cert, m.key)
    if not auth.ca:
        return TlsMaterial()
    ca = read_pem(auth.ca, "etcd CA certificate")
    try:  # a bundle (a CA being replaced) expires with its first CA to expire
        expiry = min(c.not_after for c in certinfo.authorities(ca, auth.ca))
    except certinfo.CertError as e:
        raise TlsError(f"the etcd CA certificate: {e}") from None
    CERT_EXPIRY.labels("etcd-ca").set(expiry)
    return TlsMaterial(ca=ca)


class EtcdClient(aetcd.Client):
    """aetcd.Client whose channel is TLS when `secure` (with a client certificate if the
    auth gives one), and which authenticates as the auth's user at every connect."""
    _is_connecting: bool  # aetcd's, set in its __init__

    def __init__(self, endpoint: Endpoint, auth: EtcdAuth | None = None,
                 timeout: float | None = None, options: dict[str, Any] | None = None) -> None:
        auth = auth or EtcdAuth()
        super().__init__(host=endpoint.host, port=endpoint.port, username=auth.user or None,
                         password=auth.password or None, timeout=timeout, options=options)
        self.secure = endpoint.tls or auth.tls
        self.auth = auth
        self._closed = False

    @property
    def target(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 address
        return f"{host}:{self._port}"

    def _open_channel(self) -> grpc.aio.Channel:
        options = list(self._options.items())
        if not self.secure:
            return aetcd.rpc.insecure_channel(self.target, options=options)
        m = load_tls(self.auth)  # re-read: a renewed certificate is used on reconnect
        return aetcd.rpc.secure_channel(self.target, grpc.ssl_channel_credentials(
            m.ca, m.key, m.cert), options=options)

    async def connect(self) -> None:
        """aetcd's connect (1.0.0), but with _open_channel; a failed authentication closes
        the channel it opened (aetcd's would leak it)."""
        if self._connected.is_set():
            return
        if self._closed:  # replaced by a new client: never open a channel nobody would close
            raise aetcd.exceptions.ClientError("this etcd client was closed")
        if self._is_connecting:  # another task is connecting: wait for it
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            self.channel = self._open_channel()
            if self.auth.user:
                self.auth_stub = aetcd.rpc.AuthStub(self.channel)
                request = aetcd.rpc.AuthenticateRequest(name=self.auth.user,
                                                        password=self.auth.password)
                resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(aetcd.rpc.WatchStub(self.channel),
                                                  timeout=self._timeout,
                                                  metadata=self.metadata)
            if self._closed:  # closed while it authenticated: close what it opened
                raise aetcd.exceptions.ClientError("this etcd client was closed")
            self._connected.set()
        except BaseException as e:
            if self.channel is not None:
                await self.channel.close()
            self._init_channel_attrs()
            if isinstance(e, aetcd.rpc.AioRpcError):
                aetcd.exceptions._handle_exception(e)  # aetcd's errors, as its connect raises
            raise
        finally:
            self._is_connecting = False

    async def close(self) -> None:
        self._closed = True
        if self._is_connecting:  # aetcd's close would wait for it; connect() closes instead
            return
        await super().close()


def explain(error: BaseException | None) -> str:
    """One line for an etcd client error; a failed TLS handshake says what to check."""
    text = " ".join(str(error).split()).replace("etcdserver: ", "") or type(error).__name__
    if "Hostname Verification" in text:
        return "etcd's TLS certificate does not name the host dialled (issue it with --san HOST)"
    if "handshake failed" not in text.lower():
        return text[:300]
    reason = text.rsplit("OPENSSL_internal:", 1)[-1].split(":")[0].strip()
    if "CERTIFICATE_REQUIRED" in reason or ("ALERT" in reason and (
            "CERTIFICATE" in reason or "UNKNOWN_CA" in reason)):  # etcd's alert: our side
        return (f"etcd refused the TLS handshake ({reason}): it wants a client certificate "
                "issued by a CA it trusts (--etcd-cert, --etcd-key)")
    if "VERIFY_FAILED" in reason:
        detail = text.rsplit(reason, 1)[-1].removesuffix(": OK").strip(": ")
        return f"etcd's TLS certificate is not trusted ({detail or reason}): check --etcd-ca"
    hint = ": is it serving https?" if "WRONG_VERSION" in reason else ""
    return f"TLS handshake with etcd failed ({reason}){hint}"


# ---- flags ---------------------------------------------------------------------------------

def add_flags(p: argparse.ArgumentParser) -> None:
    """--etcd-ca, --etcd-cert, --etcd-key, --etcd-user; the password only from the environment
    (a flag would show in ps)."""
    env = os.environ.get
    p.add_argument("--etcd-ca", metavar="FILE", default=env("FORMATION_ETCD_CA", ""),
                   help="CA certificate that issued etcd's certificate; without it an https "
                        "etcd is checked against the system's roots (env FORMATION_ETCD_CA)")
    p.add_argument("--etcd-cert", metavar="FILE", default=env("FORMATION_ETCD_CERT", ""),
                   help="client certificate for etcd's --client-cert-auth, issued by "
                        "--etcd-ca (env FORMATION_ETCD_CERT)")
    p.add_argument("--etcd-key", metavar="FILE", default=env("FORMATION_ETCD_KEY", ""),
                   help="its private key (env FORMATION_ETCD_KEY)")
    p.add_argument("--etcd-user", metavar="NAME", default=env("FORMATION_ETCD_USER", ""),
                   help=f"etcd user; the password is read from env {PASSWORD_ENV} only "
                        "(env FORMATION_ETCD_USER)")


def from_flags(etcd: str, ca: str = "", cert: str = "", key: str = "", user: str = "",
               env: Mapping[str, str] = os.environ) -> tuple[list[Endpoint], EtcdAuth]:
    """The endpoints and auth the flags give; ValueError with one line for a bad combination
    or TLS files that cannot be used."""
    auth = EtcdAuth(ca, cert, key, user, env.get(PASSWORD_ENV, ""))
    if bool(cert) != bool(key):
        raise ValueError("give --etcd-cert and --etcd-key together")
    if cert and not ca:
        raise ValueError("--etcd-cert needs --etcd-ca, the CA that issued it")
    if user and not auth.password:
        raise ValueError(f"--etcd-user needs its password in the environment ({PASSWORD_ENV})")
    if auth.password and not user:
        raise ValueError(f"{PASSWORD_ENV} is set but --etcd-user is not")
    endpoints = parse_endpoints(etcd, tls=auth.tls)  # bare HOST:PORT is https with TLS files
    if auth.tls and not all(e.tls for e in endpoints):
        raise ValueError("--etcd-ca/--etcd-cert/--etcd-key need https:// etcd URLs, not http://")
    load_tls(auth)  # unusable files: refused at start, not at the first connect
    return endpoints, auth


def from_args(args: argparse.Namespace) -> tuple[list[Endpoint], EtcdAuth]:
    return from_flags(args.etcd, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_user)
