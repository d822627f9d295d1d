"""Where HAProxy is (formation-lb runs it; `ctl dev` starts formation-lb only if it is there)."""
from __future__ import annotations

import os
import shutil

INSTALL_HINT = "install it with `apt-get install haproxy` (Debian's 2.6), or set HAPROXY_BIN"
DEBIAN = "/usr/sbin/haproxy"  # not on a normal user's PATH


def named() -> str | None:
    """HAPROXY_BIN if set, else `haproxy` on PATH, else Debian's; None if none of them."""
    given = os.environ.get("HAPROXY_BIN")
    if given:
        return given
    return shutil.which("haproxy") or (DEBIAN if os.access(DEBIAN, os.X_OK) else None)


def haproxy_binary() -> str | None:
    """The HAProxy to run: named(), if it is a file that can be run; else None."""
    binary = named()
    if binary is None or not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return None
    return binary


def missing() -> str:
    """Why there is no HAProxy to run, and how to get one, on one line."""
    given = named()
    return f"no HAProxy {'at ' + given if given else 'found'}: {INSTALL_HINT}"
