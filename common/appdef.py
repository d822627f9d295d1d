"""The app definition: process types, their health checks and deploy settings (those on their
own: common/deploysettings.py), releases; and the one set of rules a release must pass (bounds
in common/limits.py), applied by the scheduler to every client and by ctl first (reading the
files: common/appfiles.py), for messages that name the file and line. Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common import deploysettings
from common.deploysettings import DeploySettings
from common.fieldchecks import AppDefError, check_seconds, check_text, shown
from common.limits import (
    MAX_COMMAND_BYTES,
    MAX_DEREGISTER_TIMEOUT,
    MAX_ENV_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VARS,
    MAX_HEALTH_FAILURES,
    MAX_HEALTH_PATH_BYTES,
    MAX_HEALTH_SECONDS,
    MAX_RELEASE_BYTES,
    MAX_RELEASE_TIMEOUT,
    MAX_STOP_TIMEOUT,
    MAX_TYPES_PER_RELEASE,
    MIN_HEALTH_INTERVAL,
)
from common.names import RELEASE_TYPE, check_name

HEALTH_TYPES = ("tcp", "http", "exec")
# The health-check defaults, for formation.toml and the API alike (a web type with no check of
# its own gets WEB_DEFAULT_CHECK, as Heroku's boot check: 60 s to start listening on $PORT).
DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 2.0
DEFAULT_GRACE = 60.0
DEFAULT_FAILURES = 3
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_DEREGISTER_TIMEOUT = 2.0  # seconds a stop waits for load balancers (docs/traffic.md)
DEFAULT_RELEASE_TIMEOUT = 600.0  # seconds a release phase may run ([release] timeout)


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
    deploy: DeploySettings = field(default_factory=DeploySettings)
    deregister_timeout: float = DEFAULT_DEREGISTER_TIMEOUT


def _surges(t: ProcessType) -> bool:
    """Whether a type's default rollout starts new copies before stopping old ones: only if a
    check can say a new copy serves, and never two copies of an at_most_once type."""
    return effective_check(t.name, t.health) is not None and not t.at_most_once


def effective_deploy(t: ProcessType) -> DeploySettings:
    """A type's deploy settings with the unset ones filled in (the one owner of the defaults):
    a type with a check (its own or web's tcp default) surges 25 % and never goes below its
    count; the others, and at_most_once types, replace 25 % of their instances in place."""
    return deploysettings.fill(t.deploy, _surges(t))


@dataclass(frozen=True)
class Release:
    """An immutable version of the app: process types and environment."""
    version: int
    types: dict[str, ProcessType]
    env: dict[str, str]
    created: float
    author: str = ""       # who made it: "operator alice" (TLS) or "user@host" (ctl)
    description: str = ""  # what made it: "Deploy"
    # The release phase (the Procfile's `release:`), run once before its rollout if
    # run_release: a deploy or config change says yes, a rollback only if asked to.
    release_command: str = ""
    release_timeout: float = DEFAULT_RELEASE_TIMEOUT
    run_release: bool = False

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @staticmethod
    def from_json(data: bytes) -> Release:
        raw = json.loads(data)
        # A release stored before [TYPE.deploy] existed has no "deploy": all unset.
        types = {name: ProcessType(**{**t, "health": HealthCheck(**t.get("health", {})),
                                      "deploy": DeploySettings(**t.get("deploy", {}))})
                 for name, t in raw["types"].items()}
        # One stored before the release phase kept a Procfile's `release:` as a type: it is
        # the release phase (never run for that release: run_release is unset).
        legacy = types.pop(RELEASE_TYPE, None)
        return Release(version=int(raw["version"]), types=types, env=dict(raw["env"]),
                       created=float(raw["created"]), author=str(raw.get("author", "")),
                       description=str(raw.get("description", "")),
                       release_command=str(raw.get("release_command", "")
                                           or (legacy.command if legacy else "")),
                       release_timeout=float(raw.get("release_timeout",
                                                     DEFAULT_RELEASE_TIMEOUT)),
                       run_release=bool(raw.get("run_release", False)))


# ---- validation: one set of rules for formation.toml, the Procfile and the API ------------
# Each check raises AppDefError "WHERE: KEY ..." (one line) and returns the value it accepts
# (the checks of single values any part uses: common/fieldchecks.py).


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


def deploy_conflict(t: ProcessType, prefix: str = "") -> tuple[str, str] | None:
    """The first rule between a type's deploy settings (each valid) that they break, as (the
    key to point at, the message), else None."""
    kind = "an at_most_once type" if t.at_most_once else \
        "a type with a health check" if _surges(t) else "a type without a health check"
    return deploysettings.conflict(t.deploy, _surges(t), t.at_most_once, kind, prefix)


def check_deploy(where: str, t: ProcessType, prefix: str = "") -> DeploySettings:
    """A type's deploy settings: each value, then the rules between them for this type."""
    deploysettings.check_values(where, t.deploy, prefix)
    broken = deploy_conflict(t, prefix)
    if broken:
        raise AppDefError(f"{where}: {broken[1]}")
    return t.deploy


def check_type(t: ProcessType, where: str = "") -> ProcessType:
    """A whole process type, whoever sent it; InvalidName or AppDefError (ValueErrors)."""
    check_name("process type", t.name)
    where = where or f"process type {t.name!r}"
    if t.name == RELEASE_TYPE:
        raise AppDefError(f"{where}: {RELEASE_TYPE!r} is the release phase, not a process "
                          "type: send it as the release command")
    if not t.command.strip():
        raise AppDefError(f"{where}: has no command")
    check_text(where, "command", t.command, MAX_COMMAND_BYTES)
    check_seconds(where, "stop_timeout", t.stop_timeout, 0, MAX_STOP_TIMEOUT)
    check_seconds(where, "deregister_timeout", t.deregister_timeout, 0, MAX_DEREGISTER_TIMEOUT)
    if t.health.type:
        check_health(where, t.health, "health ")
    check_deploy(where, t, "deploy ")
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


def check_release_phase(command: str, timeout: float, where: str = "release") -> None:
    """The release phase's command ("": none) and its timeout in seconds."""
    check_text(where, "command", command, MAX_COMMAND_BYTES)
    if command and not command.strip():
        raise AppDefError(f"{where}: the command is blank")
    check_seconds(where, "timeout", timeout, 1, MAX_RELEASE_TIMEOUT)


def check_release(types: Mapping[str, ProcessType], env: Mapping[str, str],
                  release_command: str = "",
                  release_timeout: float = DEFAULT_RELEASE_TIMEOUT) -> None:
    """What Deploy stores: 1 to MAX_TYPES_PER_RELEASE valid types, a valid env, a valid
    release phase, and at most MAX_RELEASE_BYTES as stored (so etcd never refuses the
    write)."""
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
    check_release_phase(release_command, release_timeout)
    size = len(Release(0, dict(types), dict(env), 0.0, release_command=release_command,
                       release_timeout=release_timeout).to_json())
    if size > MAX_RELEASE_BYTES:
        raise AppDefError(f"the release is {size} bytes as stored, more than "
                          f"{MAX_RELEASE_BYTES}: shorten its commands or env")
