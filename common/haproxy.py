"""Where HAProxy is (formation-lb runs it; `ctl dev` starts formation-lb only if it is there)."""
from __future__ import annotations

import os
import shutil

INSTALL_HINT = "install it with `apt-get install haproxy` (Debian's 2.6), or set HAPROXY_BIN"


def haproxy_binary() -> str | None:
    """HAPROXY_BIN if set (even if it is not there: the caller says so), else `haproxy` on
    PATH, else Debian's /usr/sbin/haproxy (not on a normal user's PATH); None if none."""
    given = os.environ.get("HAPROXY_BIN")
    if given:
        return given
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
