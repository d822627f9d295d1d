"""The app definition's protobuf form: ctl encodes, the scheduler decodes and validates (for
every client, not only ctl), the agent reads the check to run. Unset health numbers take the
defaults of common/appdef.py."""
from __future__ import annotations

import math

from common.appdef import (
    DEFAULT_FAILURES,
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    HEALTH_TYPES,
    AppDefError,
    HealthCheck,
    ProcessType,
    effective_check,
)
from common.names import check_name
from proto import formation_pb2 as pb


def health_to_pb(h: HealthCheck) -> pb.HealthCheck:
    return pb.HealthCheck(type=h.type, path=h.path, command=h.command, interval=h.interval,
                          timeout=h.timeout, grace=h.grace, failures=h.failures)


def health_from_pb(h: pb.HealthCheck) -> HealthCheck:
    return HealthCheck(
        type=h.type, path=h.path or "/", command=h.command,
        interval=h.interval if h.HasField("interval") else DEFAULT_INTERVAL,
        timeout=h.timeout if h.HasField("timeout") else DEFAULT_TIMEOUT,
        grace=h.grace if h.HasField("grace") else DEFAULT_GRACE,
        failures=h.failures if h.HasField("failures") else DEFAULT_FAILURES)


def type_to_pb(t: ProcessType) -> pb.ProcessType:
    return pb.ProcessType(name=t.name, command=t.command, stop_timeout=t.stop_timeout,
                          at_most_once=t.at_most_once, health=health_to_pb(t.health))


def _seconds(where: str, key: str, value: float, minimum: float) -> float:
    if not math.isfinite(value) or value < minimum:
        raise AppDefError(f"{where}: {key} must be a number >= {minimum:g}, not {value!r}")
    return value


def type_from_pb(t: pb.ProcessType) -> ProcessType:
    """Validate a process type from the API; AppDefError (a ValueError) says what is wrong."""
    check_name("process type", t.name)
    where = f"process type {t.name!r}"
    if not t.command.strip():
        raise AppDefError(f"{where} has no command")
    h = t.health
    if h.type and h.type not in HEALTH_TYPES:
        raise AppDefError(f"{where}: unknown health check type {h.type!r}")
    health = health_from_pb(h) if h.type else HealthCheck()
    if h.type:
        _seconds(where, "health interval", health.interval, 0.1)
        _seconds(where, "health timeout", health.timeout, 0.1)
        _seconds(where, "health grace", health.grace, 0)
        if health.failures < 1:
            raise AppDefError(f"{where}: health failures must be >= 1")
    return ProcessType(t.name, t.command, _seconds(where, "stop_timeout", t.stop_timeout, 0),
                       t.at_most_once, health)


def check_for(assignment: pb.Assignment) -> HealthCheck | None:
    """The check an agent runs for an assignment (see effective_check)."""
    own = health_from_pb(assignment.health) if assignment.health.type else HealthCheck()
    return effective_check(assignment.type, own)
