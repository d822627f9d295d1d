"""Reading the app's files, as text (never opening them): the Procfile (as Heroku's CNB
parser reads it), formation.toml and .env files. Errors name `file:line`; the rules a release
must pass are common/appdef.py's.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.appdef import (
    DEFAULT_DEREGISTER_TIMEOUT,
    DEFAULT_FAILURES,
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_RELEASE_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_TIMEOUT,
    HEALTH_TYPES,
    AppDefError,
    HealthCheck,
    ProcessType,
    check_failures,
    check_health,
    check_health_path,
    check_seconds,
    check_text,
    check_type,
    deploy_conflict,
    is_env_name,
    shown,
)
from common.deploysettings import (
    DeploySettings,
    check_amount,
    check_auto_revert,
    check_deadline,
)
from common.limits import (
    MAX_COMMAND_BYTES,
    MAX_DEPLOY_SECONDS,
    MAX_DEREGISTER_TIMEOUT,
    MAX_ENV_BYTES,
    MAX_HEALTH_SECONDS,
    MAX_RELEASE_TIMEOUT,
    MAX_STOP_TIMEOUT,
    MAX_TYPES_PER_RELEASE,
    MIN_HEALTH_INTERVAL,
)
from common.names import RELEASE_TYPE, InvalidName, check_name

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
    differently; one-line warnings ("Procfile:3: ...") for the user; the release phase's
    command (its `release:` entry, never a process type), "" if none."""
    commands: dict[str, str]
    renamed: dict[str, str] = field(default_factory=dict)   # spelling in the file -> name
    warnings: tuple[str, ...] = ()
    release: str = ""


def parse_procfile(text: str, source: str = "Procfile") -> Procfile:
    """Parse Heroku's Procfile format: `type: command` per line, `#` comments, blank lines.

    Accepts what Heroku's CNB parser (heroku/buildpacks-procfile) accepts, with its
    corrections and a warning each: a name with `_` or uppercase is normalised
    (normalise_type_name), a type defined twice keeps its last definition. Also a UTF-8 BOM,
    CRLF line endings, indentation, spaces around the name and the command. A `release:`
    entry is Heroku's release phase: kept apart, not a process type."""
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
        if name != spelled and name == RELEASE_TYPE:
            warnings.append(f"{where}: {spelled!r} is the release phase")
        elif name != spelled:
            renamed[spelled] = name
            warnings.append(f"{where}: process type {spelled!r} is named {name!r}")
        if name in commands:
            warnings.append(f"{where}: process type {name!r} is defined again (line "
                            f"{defined_on[name]}); this last definition is used")
        commands[name] = command
        defined_on[name] = lineno
    release = commands.pop(RELEASE_TYPE, "")
    if not commands:
        raise AppDefError(f"{source}: defines no process type" + (
            " (a release phase alone runs nothing)" if release else ""))
    if len(commands) > MAX_TYPES_PER_RELEASE:
        raise AppDefError(f"{source}: defines {len(commands)} process types, more than "
                          f"{MAX_TYPES_PER_RELEASE}")
    return Procfile(commands, renamed, tuple(warnings), release)


# ---- formation.toml -------------------------------------------------------------------------

_TYPE_KEYS = {"stop_timeout", "at_most_once", "health", "deploy", "deregister_timeout"}
_SECONDS = (("stop_timeout", DEFAULT_STOP_TIMEOUT, MAX_STOP_TIMEOUT),
            ("deregister_timeout", DEFAULT_DEREGISTER_TIMEOUT, MAX_DEREGISTER_TIMEOUT))
_HEALTH_KEYS = {"type", "path", "command", "interval", "timeout", "grace", "failures"}
_DEPLOY_KEYS = {"max_surge", "max_unavailable", "min_healthy_time", "healthy_deadline",
                "auto_revert"}
_RELEASE_KEYS = {"timeout"}
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


def _toml(text: str, source: str) -> tuple[dict[str, Any], Callable[..., str]]:
    """The parsed text, and `at(table, key=None)`: `formation.toml:LINE: [table]`, the line of
    the key, else of the table."""
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as e:
        raise AppDefError(f"{source}: {e}") from None

    def at(table: str, key: str | None = None) -> str:
        parent, _, last = table.rpartition(".")
        line = _toml_line(text, table, key) or _toml_line(text, table) \
            or (_toml_line(text, parent, last) if parent else None)
        return f"{source}{'' if line is None else f':{line}'}: [{table}]"
    return raw, at


def parse_settings(text: str, commands: Mapping[str, str], source: str = "formation.toml",
                   warnings: list[str] | None = None) -> dict[str, ProcessType]:
    """Combine Procfile commands with per-type settings from formation.toml text.

    A table's name is normalised as a Procfile's (`[critical_job]` is for `critical-job`);
    each such table adds a warning to `warnings` if given."""
    raw, at = _toml(text, source)

    tables: dict[str, tuple[str, Any]] = {}  # name -> (spelling, table)
    for spelled, table in raw.items():
        name = normalise_type_name(spelled)
        if name in tables:
            raise AppDefError(f"{at(spelled)}: process type {name!r} has settings twice "
                              f"([{tables[name][0]}] too)")
        if name == RELEASE_TYPE:  # the release phase's: parse_release_timeout
            tables[name] = (spelled, None)
            continue
        if name != spelled and warnings is not None:
            warnings.append(f"{at(spelled)}: applies to process type {name!r}")
        tables[name] = (spelled, table)
    unknown_types = sorted(spelled for name, (spelled, _) in tables.items()
                           if name not in commands and name != RELEASE_TYPE)
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
            raise AppDefError(f"{at(spelled, 'at_most_once')}: at_most_once must be true or false")
        stop, deregister = (check_seconds(at(spelled, key), key, table.get(key, default), 0, top)
                            for key, default, top in _SECONDS)
        health = _health(f"{spelled}.health", table["health"], at) if "health" in table \
            else HealthCheck()
        t = ProcessType(name=name, command=command, stop_timeout=stop,
                        at_most_once=at_most_once, health=health,
                        deploy=_deploy(f"{spelled}.deploy", table.get("deploy", {}), at),
                        deregister_timeout=deregister)
        if "deploy" in table:  # the rules between the settings, at the line of the key
            _deploy_rules(f"{spelled}.deploy", t, at)
        types[name] = check_type(t, f"{source}: [{spelled}]")
    return types


def parse_release_timeout(text: str, release: str, source: str = "formation.toml") -> float:
    """formation.toml's `[release] timeout` (seconds the release phase may run), or the
    default; a [release] table needs a `release:` entry in the Procfile."""
    raw, at = _toml(text, source)
    spelled = [name for name in raw if normalise_type_name(name) == RELEASE_TYPE]
    if not spelled:
        return DEFAULT_RELEASE_TIMEOUT
    name = spelled[0]  # two spellings: parse_settings says so, as of any table
    table = _table(name, raw[name], _RELEASE_KEYS, at)
    if not release:
        raise AppDefError(f"{at(name)}: settings for the release phase, but the Procfile has "
                          "no 'release:' entry")
    return check_seconds(at(name, "timeout"), "timeout",
                         table.get("timeout", DEFAULT_RELEASE_TIMEOUT), 1, MAX_RELEASE_TIMEOUT)


def _table(table: str, raw: Any, keys: set[str] | frozenset[str],
           at: Callable[[str, str | None], str]) -> dict[str, Any]:
    """raw as a table of only known keys, else AppDefError at its line."""
    if not isinstance(raw, dict):
        raise AppDefError(f"{at(table, None)}: must be a table")
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise AppDefError(f"{at(table, unknown[0])}: unknown key(s) {', '.join(unknown)}")
    return raw


def _health(table: str, raw: Any, at: Callable[[str, str | None], str]) -> HealthCheck:
    raw = _table(table, raw, _HEALTH_KEYS, at)
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


def _deploy(table: str, raw: Any, at: Callable[[str, str | None], str]) -> DeploySettings:
    """[TYPE.deploy]: each value on its own (the rules between them: _deploy_rules)."""
    raw = _table(table, raw, _DEPLOY_KEYS, at)

    def value(key: str, check: Callable[[str, str, Any], Any]) -> Any:
        return check(at(table, key), key, raw[key]) if key in raw else None
    return DeploySettings(
        max_surge=value("max_surge", check_amount),
        max_unavailable=value("max_unavailable", check_amount),
        min_healthy_time=value("min_healthy_time", lambda where, key, v: check_seconds(
            where, key, v, 0, MAX_DEPLOY_SECONDS)),
        healthy_deadline=value("healthy_deadline", check_deadline),
        auto_revert=value("auto_revert", check_auto_revert))


def _deploy_rules(table: str, t: ProcessType, at: Callable[[str, str | None], str]) -> None:
    """The rules between a type's deploy settings (as check_type's), at the line of the key
    concerned."""
    broken = deploy_conflict(t)
    if broken:
        raise AppDefError(f"{at(table, broken[0])}: {broken[1]}")


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
