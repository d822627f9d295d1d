"""The app definition: process types from a Procfile, their settings from formation.toml,
releases; and the one set of rules a release must pass (bounds in common/limits.py), applied by
the scheduler to every client and by ctl first, for messages that name the file and line.

Pure: parsing takes text, never opens files, so ctl and the scheduler share it and tests need
no I/O.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
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

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def normalise_type_name(spelled: str) -> str:
    """Heroku's (CNB) correction of a Procfile key: spaces around dropped, `_` -> `-`, ASCII
    uppercase -> lowercase (`Critical_Job` -> `critical-job`). The result may still be invalid."""
    return spelled.strip(" \t").replace("_", "-").translate(_ASCII_LOWER)


def _lines(text: str) -> list[str]:
    """Lines split at LF or CRLF only (a lone CR or a form feed is not a line break), without a
    leading UTF-8 byte-order mark."""
    return [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]


@dataclass(frozen=True)
class Procfile:
    """A parsed Procfile: commands by process type, in file order; the names it spelled
    differently; one-line warnings ("Procfile:3: ...") for the user."""
    commands: dict[str, str]
    renamed: dict[str, str] = field(default_factory=dict)   # spelling in the file -> name
    warnings: tuple[str, ...] = ()


def parse_procfile(text: str, source: str = "Procfile") -> Procfile:
    """Parse Heroku's Procfile format: `type: command` per line, `#` comments, blank lines.

    Accepts what Heroku's CNB parser (heroku/buildpacks-procfile) accepts, with its
    corrections and a warning each: a name with `_` or uppercase is normalised
    (normalise_type_name), a type defined twice keeps its last definition. Also a UTF-8 BOM,
    CRLF line endings, indentation, spaces around the name and the command."""
    commands: dict[str, str] = {}
    defined_on: dict[str, int] = {}
    renamed: dict[str, str] = {}
    warnings: list[str] = []
    for lineno, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        spelled, sep, command = stripped.partition(":")
        spelled, command = spelled.strip(), command.strip()
        if not sep:
            raise AppDefError(f"{where}: expected 'type: command', got {shown(stripped, 60)}")
        name = normalise_type_name(spelled)
        try:
            check_name("process type", name)
        except InvalidName:
            raise AppDefError(f"{where}: invalid process type name {shown(spelled)}: use "
                              f"letters, digits, '-' and '_', at most 63, a letter or digit "
                              f"first") from None
        if not command:
            raise AppDefError(f"{where}: process type {spelled!r} has no command")
        bad = _CONTROL.search(command)
        if bad:
            raise AppDefError(f"{where}: the command of {spelled!r} contains the control "
                              f"character U+{ord(bad.group()):04X}")
        check_text(where, f"the command of {spelled!r}", command, MAX_COMMAND_BYTES)
        if name != spelled:
            renamed[spelled] = name
            warnings.append(f"{where}: process type {spelled!r} is named {name!r}")
        if name in commands:
            warnings.append(f"{where}: process type {name!r} is defined again (line "
                            f"{defined_on[name]}); this last definition is used")
        commands[name] = command
        defined_on[name] = lineno
    if not commands:
        raise AppDefError(f"{source}: defines no process type")
    if len(commands) > MAX_TYPES_PER_RELEASE:
        raise AppDefError(f"{source}: defines {len(commands)} process types, more than "
                          f"{MAX_TYPES_PER_RELEASE}")
    return Procfile(commands, renamed, tuple(warnings))


# ---- formation.toml -------------------------------------------------------------------------

_TYPE_KEYS = {"stop_timeout", "at_most_once", "health"}
_HEALTH_KEYS = {"type", "path", "command", "interval", "timeout", "grace", "failures"}
_TABLE_RE = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _toml_line(text: str, table: str, key: str | None = None) -> int | None:
    """The line of `[table]` (or of `key = ...` in it), for messages; None if not found the
    simple way (quoted or dotted keys, inline tables)."""
    current = None
    key_re = re.compile(rf"\s*{re.escape(key)}\s*=") if key else None
    for lineno, line in enumerate(_lines(text), start=1):
        header = _TABLE_RE.match(line)
        if header:
            current = re.sub(r"\s*\.\s*", ".", header.group(1))
            if current == table and key_re is None:
                return lineno
        elif key_re is not None and current == table and key_re.match(line):
            return lineno
    return None


def parse_settings(text: str, commands: Mapping[str, str], source: str = "formation.toml",
                   warnings: list[str] | None = None) -> dict[str, ProcessType]:
    """Combine Procfile commands with per-type settings from formation.toml text.

    A table's name is normalised as a Procfile's (`[critical_job]` is for `critical-job`);
    each such table adds a warning to `warnings` if given."""
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as e:
        raise AppDefError(f"{source}: {e}") from None

    def at(table: str, key: str | None = None) -> str:
        """`formation.toml:LINE: [table]`: the line of the key, else of the table."""
        parent, _, last = table.rpartition(".")
        line = _toml_line(text, table, key) or _toml_line(text, table) \
            or (_toml_line(text, parent, last) if parent else None)
        return f"{source}{'' if line is None else f':{line}'}: [{table}]"

    tables: dict[str, tuple[str, Any]] = {}  # name -> (spelling, table)
    for spelled, table in raw.items():
        name = normalise_type_name(spelled)
        if name in tables:
            raise AppDefError(f"{at(spelled)}: process type {name!r} has settings twice "
                              f"([{tables[name][0]}] too)")
        if name != spelled and warnings is not None:
            warnings.append(f"{at(spelled)}: applies to process type {name!r}")
        tables[name] = (spelled, table)
    unknown_types = sorted(spelled for name, (spelled, _) in tables.items()
                           if name not in commands)
    if unknown_types:
        raise AppDefError(f"{source}: settings for process type(s) not in the Procfile: "
                          f"{', '.join(unknown_types)}")
    types: dict[str, ProcessType] = {}
    for name, command in commands.items():
        spelled, table = tables.get(name, (name, {}))
        if not isinstance(table, dict):
            raise AppDefError(f"{at(spelled)}: must be a table")
        unknown = sorted(set(table) - _TYPE_KEYS)
        if unknown:
            raise AppDefError(f"{at(spelled, unknown[0])}: unknown key(s) {', '.join(unknown)}")
        at_most_once = table.get("at_most_once", False)
        if not isinstance(at_most_once, bool):
            raise AppDefError(f"{at(spelled, 'at_most_once')}: at_most_once must be true or "
                              f"false")
        stop_timeout = check_seconds(at(spelled, "stop_timeout"), "stop_timeout",
                                     table.get("stop_timeout", DEFAULT_STOP_TIMEOUT), 0,
                                     MAX_STOP_TIMEOUT)
        health = _health(f"{spelled}.health", table["health"], at) if "health" in table \
            else HealthCheck()
        types[name] = check_type(ProcessType(name=name, command=command,
                                             stop_timeout=stop_timeout,
                                             at_most_once=at_most_once, health=health),
                                 f"{source}: [{spelled}]")
    return types


def _health(table: str, raw: Any, at: Callable[[str, str | None], str]) -> HealthCheck:
    if not isinstance(raw, dict):
        raise AppDefError(f"{at(table, None)}: must be a table")
    unknown = sorted(set(raw) - _HEALTH_KEYS)
    if unknown:
        raise AppDefError(f"{at(table, unknown[0])}: unknown key(s) {', '.join(unknown)}")
    kind = raw.get("type", "tcp")
    if kind not in HEALTH_TYPES:
        raise AppDefError(f"{at(table, 'type')}: type must be one of {', '.join(HEALTH_TYPES)},"
                          f" not {shown(kind)}")
    command = raw.get("command", "")
    if not isinstance(command, str) or (kind == "exec") != bool(command.strip()):
        raise AppDefError(f"{at(table, 'command')}: command is required for type 'exec' and "
                          f"only for it")
    h = HealthCheck(
        type=kind,
        path=check_health_path(at(table, "path"), "path", raw.get("path", "/")),
        command=check_text(at(table, "command"), "command", command, MAX_COMMAND_BYTES),
        interval=check_seconds(at(table, "interval"), "interval",
                               raw.get("interval", DEFAULT_INTERVAL), MIN_HEALTH_INTERVAL,
                               MAX_HEALTH_SECONDS),
        timeout=check_seconds(at(table, "timeout"), "timeout",
                              raw.get("timeout", DEFAULT_TIMEOUT), MIN_HEALTH_INTERVAL,
                              MAX_HEALTH_SECONDS),
        grace=check_seconds(at(table, "grace"), "grace", raw.get("grace", DEFAULT_GRACE), 0,
                            MAX_HEALTH_SECONDS),
        failures=check_failures(at(table, "failures"), "failures",
                                raw.get("failures", DEFAULT_FAILURES)))
    return check_health(at(table, None), h)


# ---- env ------------------------------------------------------------------------------------

def parse_env_line(text: str, source: str) -> tuple[str, str]:
    """`KEY=value` -> (KEY, value); the key must be a shell-style variable name, the value
    without NUL and at most MAX_ENV_BYTES."""
    key, sep, value = text.partition("=")
    if not sep or not is_env_name(key):
        raise AppDefError(f"{source}: expected KEY=VALUE, got {shown(text)}")
    return key, check_text(source, f"variable {key}", value, MAX_ENV_BYTES)


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """A .env file: KEY=VALUE lines, `#` comments, optional `export ` and quotes."""
    env: dict[str, str] = {}
    for lineno, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").strip()
        key, value = parse_env_line(stripped, f"{source}:{lineno}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
