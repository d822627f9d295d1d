"""The app definition: process types from a Procfile, their settings from formation.toml, releases.

Pure: parsing takes text, never opens files, so ctl and the scheduler share it and tests need no I/O.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

from common.names import InvalidName, check_name

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


def parse_procfile(text: str, source: str = "Procfile") -> dict[str, str]:
    """Parse Heroku's Procfile format: `type: command` per line, `#` comments, blank lines."""
    types: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, command = stripped.partition(":")
        name, command = name.strip(), command.strip()
        if not sep:
            raise AppDefError(f"{source}:{lineno}: expected 'type: command', got {stripped!r}")
        try:
            check_name("process type", name)
        except InvalidName as e:
            raise AppDefError(f"{source}:{lineno}: {e}") from None
        if not command:
            raise AppDefError(f"{source}:{lineno}: process type {name!r} has no command")
        if name in types:
            raise AppDefError(f"{source}:{lineno}: process type {name!r} is defined twice")
        types[name] = command
    if not types:
        raise AppDefError(f"{source}: defines no process type")
    return types


_TYPE_KEYS = {"stop_timeout", "at_most_once", "health"}
_HEALTH_KEYS = {"type", "path", "command", "interval", "timeout", "grace", "failures"}


def _number(where: str, key: str, value: Any, minimum: float, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < minimum:
        kind = "a whole number" if integer else "a number"
        raise AppDefError(f"{where}: {key} must be {kind} >= {minimum}, not {value!r}")
    return value


def _health(where: str, raw: Any) -> HealthCheck:
    if not isinstance(raw, dict):
        raise AppDefError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _HEALTH_KEYS)
    if unknown:
        raise AppDefError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = raw.get("type", "tcp")
    if kind not in HEALTH_TYPES:
        raise AppDefError(f"{where}: type must be one of {', '.join(HEALTH_TYPES)}, not {kind!r}")
    path = raw.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise AppDefError(f"{where}: path must be a string starting with '/'")
    command = raw.get("command", "")
    if not isinstance(command, str) or (kind == "exec") != bool(command):
        raise AppDefError(f"{where}: command is required for type 'exec' and only for it")
    return HealthCheck(
        type=kind, path=path, command=command,
        interval=float(_number(where, "interval", raw.get("interval", DEFAULT_INTERVAL), 0.1)),
        timeout=float(_number(where, "timeout", raw.get("timeout", DEFAULT_TIMEOUT), 0.1)),
        grace=float(_number(where, "grace", raw.get("grace", DEFAULT_GRACE), 0)),
        failures=int(_number(where, "failures", raw.get("failures", DEFAULT_FAILURES), 1,
                             integer=True)),
    )


def parse_settings(text: str, commands: dict[str, str], source: str = "formation.toml"
                   ) -> dict[str, ProcessType]:
    """Combine Procfile commands with per-type settings from formation.toml text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AppDefError(f"{source}: {e}") from None
    unknown_types = sorted(set(raw) - set(commands))
    if unknown_types:
        raise AppDefError(f"{source}: settings for process type(s) not in the Procfile: "
                          f"{', '.join(unknown_types)}")
    types: dict[str, ProcessType] = {}
    for name, command in commands.items():
        table = raw.get(name, {})
        where = f"{source}: [{name}]"
        if not isinstance(table, dict):
            raise AppDefError(f"{where}: must be a table")
        unknown = sorted(set(table) - _TYPE_KEYS)
        if unknown:
            raise AppDefError(f"{where}: unknown key(s) {', '.join(unknown)}")
        at_most_once = table.get("at_most_once", False)
        if not isinstance(at_most_once, bool):
            raise AppDefError(f"{where}: at_most_once must be true or false")
        health = _health(f"{source}: [{name}.health]", table["health"]) if "health" in table \
            else HealthCheck()
        types[name] = ProcessType(
            name=name, command=command,
            stop_timeout=float(_number(where, "stop_timeout",
                                       table.get("stop_timeout", DEFAULT_STOP_TIMEOUT), 0)),
            at_most_once=at_most_once, health=health)
    return types


def is_env_name(key: str) -> bool:
    """A shell-style variable name: ASCII letters, digits and `_`, not starting with a digit."""
    return bool(key) and key.isascii() and (key[0].isalpha() or key[0] == "_") \
        and all(c.isalnum() or c == "_" for c in key)


def parse_env_line(text: str, source: str) -> tuple[str, str]:
    """`KEY=value` -> (KEY, value); the key must be a shell-style variable name."""
    key, sep, value = text.partition("=")
    if not sep or not is_env_name(key):
        raise AppDefError(f"{source}: expected KEY=VALUE, got {text!r}")
    return key, value


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """A .env file: KEY=VALUE lines, `#` comments, optional `export ` and quotes."""
    env: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").strip()
        key, value = parse_env_line(stripped, f"{source}:{lineno}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
