"""The current context: where `ctl` finds a running `ctl dev` cluster and its operator's
certificate, like kubectl's current context.

`ctl dev` writes the file while it runs and removes it when it stops. ctl reads it only when
no scheduler is named (no --scheduler, no FORMATION_SCHEDULER), and only if the process that
wrote it still runs. The file is `$FORMATION_CONTEXT`, else
`$XDG_CONFIG_HOME/formation/context.json` (`~/.config/formation/context.json`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

MAX_BYTES = 64 * 1024  # a larger context file is not ours: ignored


@dataclass(frozen=True)
class Context:
    scheduler: str
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    pid: int = 0


def path() -> str:
    if os.environ.get("FORMATION_CONTEXT"):
        return os.environ["FORMATION_CONTEXT"]
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".config")
    return os.path.join(config, "formation", "context.json")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read() -> Context | None:
    """The context of a running `ctl dev`, or None (no file, a stale or unreadable one)."""
    try:
        with open(path(), "rb") as f:
            data = json.loads(f.read(MAX_BYTES + 1)[:MAX_BYTES])
        found = Context(**{k: data[k] for k in Context.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return None
    if not (isinstance(found.scheduler, str) and isinstance(found.pid, int)
            and all(isinstance(v, str) for v in (found.tls_ca, found.tls_cert, found.tls_key))):
        return None
    return found if _alive(found.pid) else None


def write(context: Context) -> str:
    """Write the context (mode 0600, atomically); its path."""
    target = path()
    os.makedirs(os.path.dirname(target) or ".", mode=0o700, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(context), f)
    os.replace(tmp, target)
    return target


def remove(pid: int) -> None:
    """Remove the context if it is still the one process pid wrote (another `ctl dev` may
    have replaced it since)."""
    try:
        with open(path(), "rb") as f:
            mine = json.loads(f.read(MAX_BYTES)).get("pid") == pid
        if mine:
            os.unlink(path())
    except (OSError, ValueError, AttributeError):
        pass
