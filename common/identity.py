"""Who a peer is: a role and a name, as a certificate of the cluster binds them.

No cryptography here (the daemons import this on every call path): the certificates
themselves are made in common/pki.py and read in common/certinfo.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.names import check_name

ROLES = ("scheduler", "agent", "operator", "viewer", "lb")
SERVER_ROLES = ("scheduler", "agent")
TRUST_DOMAIN = "formation"
URI_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
MAX_PEM_BYTES = 1 << 20  # a certificate, key or CA file larger than this is refused
NO_ROLE = "a certificate naming a formation role is required"  # a refusal without identity


@dataclass(frozen=True)
class Identity:
    """Who a peer is, as its certificate says."""
    role: str
    name: str

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


def role_host(role: str, name: str = "") -> str:
    """The DNS name a client checks a server's certificate against."""
    return f"{name}.{role}.{TRUST_DOMAIN}" if name else f"{role}.{TRUST_DOMAIN}"


def identity_uri(role: str, name: str) -> str:
    return f"{URI_PREFIX}{role}/{name}"


def parse_identity(uri: str) -> Identity | None:
    """The identity a `spiffe://formation/ROLE/NAME` URI names, or None."""
    if not uri.startswith(URI_PREFIX):
        return None
    role, sep, name = uri[len(URI_PREFIX):].partition("/")
    if not sep or role not in ROLES:
        return None
    try:
        check_name(role, name)
    except ValueError:
        return None
    return Identity(role, name)
