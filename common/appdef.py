"""The app definition: process types, their health checks, releases; and the one set of
rules a release must pass (bounds in common/limits.py), applied by the scheduler to every client
and by ctl first (reading the files: common/appfiles.py), for messages that name the file and
line. Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.limits import (
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VARS,
    MAX_HEALTH_FAILURES,
    MAX_HEALTH_PATH_BYTES,
    MAX_HEALTH_SECONDS,
    MAX_RELEASE_BYTES,
    MAX_STOP_TIMEOUT,
    MAX_TYPES_PER_RELEASE,
    MIN_HEALTH_INTERVAL,
)
from common.names import check_name

HEALTH_TYPES = ("tcp", "http", "exec")
# The health-check defaults, for formation.toml and the API alike (a web type with no check of
# its own gets WEB_DEFAULT_CHECK, as Heroku's boot check: 60 s to start listening on $PORT).
DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 2.0
DEFAULT_GRACE = 60.0
DEFAULT_FAILURES = 3
DEFAULT_STOP_TIMEOUT = 10.0


class AppDefError(ValueError):
    """A Procfile or formation.toml that cannot be used; the message names the place."""


@dataclass(frozen=True)
class HealthCheck:
    """How the agent checks one instance (docs/architecture.md); type "" means no check."""
    type: str = ""
    path: str = "/"
    command: str = ""
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    grace: float = DEFAULT_GRACE
    failures: int = DEFAULT_FAILURES


WEB_DEFAULT_CHECK = HealthCheck(type="tcp")


def effective_check(type_name: str, health: HealthCheck) -> HealthCheck | None:
    """The check an instance of this type gets: its own, tcp for web, else none."""
    if health.type:
        return health
    return WEB_DEFAULT_CHECK if type_name == "web" else None


@dataclass(frozen=True)
class ProcessType:
    """One kind of work: its command and how to run it."""
    name: str
    command: str
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    at_most_once: bool = False
    health: HealthCheck = field(default_factory=HealthCheck)


@dataclass(frozen=True)
class Release:
    """An immutable version of the app: process types and environment."""
    version: int
    types: dict[str, ProcessType]
    env: dict[str, str]
    created: float

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @staticmethod
    def from_json(data: bytes) -> Release:
        raw = json.loads(data)
        types = {name: ProcessType(**{**t, "health": HealthCheck(**t.get("health", {}))})
                 for name, t in raw["types"].items()}
        return Release(version=int(raw["version"]), types=types, env=dict(raw["env"]),
                       created=float(raw["created"]))


# ---- validation: one set of rules for formation.toml, the Procfile and the API ------------
# Each check raises AppDefError "WHERE: KEY ..." (one line) and returns the value it accepts.


def shown(value: object, limit: int = 40) -> str:
    """repr(value), cut to about `limit` characters: a message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_text(where: str, key: str, value: str, max_bytes: int) -> str:
    """Text that can be stored and exec'd: no NUL, valid UTF-8, at most max_bytes."""
    if "\x00" in value:
        raise AppDefError(f"{where}: {key} contains a NUL byte")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise AppDefError(f"{where}: {key} is not valid UTF-8 text") from None
    if size > max_bytes:
        raise AppDefError(f"{where}: {key} is {size} bytes, more than {max_bytes}")
    return value


def check_seconds(where: str, key: str, value: Any, low: float, high: float) -> float:
    """A finite number of seconds from low to high (a TOML int or float; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        raise AppDefError(f"{where}: {key} must be a number of seconds from {low:g} to "
                          f"{high:g}, not {shown(value)}")
    return float(value)


def check_failures(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_HEALTH_FAILURES:
        raise AppDefError(f"{where}: {key} must be a whole number from 1 to "
                          f"{MAX_HEALTH_FAILURES}, not {shown(value)}")
    return value


def check_health_path(where: str, key: str, value: Any) -> str:
    """An http check's path: '/' first, printable ASCII without spaces (no CR/LF to inject)."""
    if not isinstance(value, str) or not value.startswith("/") \
            or len(value) > MAX_HEALTH_PATH_BYTES or not all("!" <= c <= "~" for c in value):
        raise AppDefError(f"{where}: {key} must start with '/' and be printable ASCII without "
                          f"spaces, at most {MAX_HEALTH_PATH_BYTES} bytes, not {shown(value)}")
    return value


def check_health(where: str, h: HealthCheck, prefix: str = "") -> HealthCheck:
    """A check with a type; keys are named `prefix + key` (the API says "health interval")."""
    if h.type not in HEALTH_TYPES:
        raise AppDefError(f"{where}: {prefix}type must be one of {', '.join(HEALTH_TYPES)}, "
                          f"not {shown(h.type)}")
    check_health_path(where, prefix + "path", h.path)
    if (h.type == "exec") != bool(h.command.strip()):
        raise AppDefError(f"{where}: {prefix}command is required for type 'exec' and only for it")
    check_text(where, prefix + "command", h.command, MAX_COMMAND_BYTES)
    check_seconds(where, prefix + "interval", h.interval, MIN_HEALTH_INTERVAL, MAX_HEALTH_SECONDS)
    check_seconds(where, prefix + "timeout", h.timeout, MIN_HEALTH_INTERVAL, MAX_HEALTH_SECONDS)
    check_seconds(where, prefix + "grace", h.grace, 0, MAX_HEALTH_SECONDS)
    check_failures(where, prefix + "failures", h.failures)
    return h


def check_type(t: ProcessType, where: str = "") -> ProcessType:
    """A whole process type, whoever sent it; InvalidName or AppDefError (ValueErrors)."""
    check_name("process type", t.name)
    where = where or f"process type {t.name!r}"
    if not t.command.strip():
        raise AppDefError(f"{where}: has no command")
    check_text(where, "command", t.command, MAX_COMMAND_BYTES)
    check_seconds(where, "stop_timeout", t.stop_timeout, 0, MAX_STOP_TIMEOUT)
    if t.health.type:
        check_health(where, t.health, "health ")
    return t


def is_env_name(key: str) -> bool:
    """A shell-style variable name: ASCII letters, digits and `_`, not starting with a digit,
    at most MAX_ENV_NAME_BYTES."""
    return 0 < len(key) <= MAX_ENV_NAME_BYTES and key.isascii() \
        and (key[0].isalpha() or key[0] == "_") and all(c.isalnum() or c == "_" for c in key)


def check_env_name(where: str, key: str) -> str:
    if not is_env_name(key):
        raise AppDefError(f"{where}: invalid environment variable name {shown(key)}: use ASCII "
                          f"letters, digits and '_', not a digit first, at most "
                          f"{MAX_ENV_NAME_BYTES}")
    return key


def check_env(env: Mapping[str, str], where: str = "env") -> dict[str, str]:
    """A release's environment: names, values without NUL, and the bounds of common/limits."""
    if len(env) > MAX_ENV_VARS:
        raise AppDefError(f"{where}: {len(env)} variables, more than {MAX_ENV_VARS}")
    total = 0
    for key, value in env.items():
        check_env_name(where, key)
        total += len(key) + len(check_text(where, f"variable {key}", value, MAX_ENV_BYTES)
                                .encode())
    if total > MAX_ENV_BYTES:
        raise AppDefError(f"{where}: {total} bytes of names and values, more than "
                          f"{MAX_ENV_BYTES}")
    return dict(env)


def check_release(types: Mapping[str, ProcessType], env: Mapping[str, str]) -> None:
    """What Deploy stores: 1 to MAX_TYPES_PER_RELEASE valid types, a valid env, and at most
    MAX_RELEASE_BYTES as stored (so etcd never refuses the write)."""
    if not types:
        raise AppDefError("a release needs at least one process type")
    if len(types) > MAX_TYPES_PER_RELEASE:
        raise AppDefError(f"a release has {len(types)} process types, more than "
                          f"{MAX_TYPES_PER_RELEASE}")
    for name, t in types.items():
        if name != t.name:
            raise AppDefError(f"process type {t.name!r} is listed as {name!r}")
        check_type(t)
    check_env(env)
    size = len(Release(0, dict(types), dict(env), 0.0).to_json())
    if size > MAX_RELEASE_BYTES:
        raise AppDefError(f"the release is {size} bytes as stored, more than "
                          f"{MAX_RELEASE_BYTES}: shorten its commands or env")


# ---- the Procfile ---------------------------------------------------------------------------
