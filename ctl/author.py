"""Who runs ctl, as a plaintext scheduler records it."""
from __future__ import annotations

import getpass
import os
import socket


def author() -> str:
    """`user@host`, what a plaintext scheduler records as a release's author (with TLS it
    records the certificate's role and name instead)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    text = f"{user}@{socket.gethostname()}"
    return "".join(c for c in text if c.isprintable())[:255]
