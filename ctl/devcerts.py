"""A throwaway CA and its certificates for a cluster on one machine (`ctl dev`, the tests):
the secure path is the one everyone runs every day."""
from __future__ import annotations

import datetime
import os

from common import pki
from common.tls import TlsPaths


class DevCerts:
    """A new CA in directory `where` (made 0700), issuing certificates on demand."""

    def __init__(self, where: str) -> None:
        os.makedirs(where, mode=0o700, exist_ok=True)
        self.dir = where
        # Valid from a month ago, so that a test can issue a certificate already expired.
        self.ca, self.ca_key = pki.make_ca("Formation throwaway CA", not_before=(
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)))
        self.ca_path = os.path.join(where, "ca.pem")
        pki.write_public(self.ca_path, self.ca)

    def issue(self, role: str, name: str, sans: tuple[str, ...] = ("127.0.0.1",),
              days: int = 30) -> TlsPaths:
        """NAME's certificate and key in ROLE (the same files again if already issued)."""
        cert, key = (os.path.join(self.dir, f"{name}.pem"),
                     os.path.join(self.dir, f"{name}-key.pem"))
        if not os.path.exists(cert):
            cert_pem, key_pem = pki.issue(self.ca, self.ca_key, role, name, list(sans), days)
            pki.write_private(key, key_pem)
            pki.write_public(cert, cert_pem)
        return TlsPaths(self.ca_path, cert, key)
