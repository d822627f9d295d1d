"""The app definition's protobuf form: ctl encodes, the scheduler decodes and validates (for
every client, not only ctl), the agent reads the check to run. Unset health numbers take the
defaults of common/appdef.py; unset deploy settings stay unset (None), as in formation.toml;
the rules are common/appdef.py's check_* (bounds in common/limits.py)."""
from __future__ import annotations

from common.appdef import (
    DEFAULT_DEREGISTER_TIMEOUT,
    DEFAULT_FAILURES,
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_RELEASE_TIMEOUT,
    DEFAULT_TIMEOUT,
    AppDefError,
    HealthCheck,
    ProcessType,
    check_env,
    check_release,
    check_type,
    effective_check,
)
from common.deploysettings import Amount, DeploySettings
from common.limits import MAX_TYPES_PER_RELEASE
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


def _amount_to_pb(d: pb.DeploySettings, key: str, amount: Amount | None) -> None:
    if amount is not None:  # else the oneof stays unset: the type's default
        setattr(d, f"{key}_percent" if isinstance(amount, str) else f"{key}_count", amount)


def _amount_from_pb(d: pb.DeploySettings, key: str) -> Amount | None:
    which = d.WhichOneof(key)
    return None if which is None else getattr(d, which)


def deploy_to_pb(d: DeploySettings) -> pb.DeploySettings:
    out = pb.DeploySettings(min_healthy_time=d.min_healthy_time,
                            healthy_deadline=d.healthy_deadline, auto_revert=d.auto_revert)
    _amount_to_pb(out, "max_surge", d.max_surge)
    _amount_to_pb(out, "max_unavailable", d.max_unavailable)
    return out


def deploy_from_pb(d: pb.DeploySettings) -> DeploySettings:
    """As sent, unset fields None; not checked (check_type does)."""
    return DeploySettings(
        max_surge=_amount_from_pb(d, "max_surge"),
        max_unavailable=_amount_from_pb(d, "max_unavailable"),
        min_healthy_time=d.min_healthy_time if d.HasField("min_healthy_time") else None,
        healthy_deadline=d.healthy_deadline if d.HasField("healthy_deadline") else None,
        auto_revert=d.auto_revert if d.HasField("auto_revert") else None)


def type_to_pb(t: ProcessType) -> pb.ProcessType:
    return pb.ProcessType(name=t.name, command=t.command, stop_timeout=t.stop_timeout,
                          at_most_once=t.at_most_once, health=health_to_pb(t.health),
                          deploy=deploy_to_pb(t.deploy),
                          deregister_timeout=t.deregister_timeout)


def type_from_pb(t: pb.ProcessType) -> ProcessType:
    """Validate a process type from the API; AppDefError (a ValueError) says what is wrong.
    A health check of type "" is no check: its other fields are ignored."""
    check_name("process type", t.name)
    health = health_from_pb(t.health) if t.health.type else HealthCheck()
    return check_type(ProcessType(
        t.name, t.command, t.stop_timeout, t.at_most_once, health, deploy_from_pb(t.deploy),
        t.deregister_timeout if t.HasField("deregister_timeout")
        else DEFAULT_DEREGISTER_TIMEOUT))


def release_from_pb(request: pb.DeployRequest
                    ) -> tuple[dict[str, ProcessType], dict[str, str], str, float]:
    """Validate a whole DeployRequest but its app name: (types by name, env, release command,
    its timeout), or AppDefError (InvalidName for a bad type name); both ValueErrors,
    answered INVALID_ARGUMENT."""
    if len(request.types) > MAX_TYPES_PER_RELEASE:  # before any work per type
        raise AppDefError(f"a release has {len(request.types)} process types, more than "
                          f"{MAX_TYPES_PER_RELEASE}")
    types: dict[str, ProcessType] = {}
    for t in request.types:
        if t.name in types:
            raise AppDefError(f"process type {t.name!r} is defined twice")
        types[t.name] = type_from_pb(t)
    env = check_env(request.env)
    timeout = request.release_timeout or DEFAULT_RELEASE_TIMEOUT
    check_release(types, env, request.release_command, timeout)
    return types, env, request.release_command, timeout


def check_for(assignment: pb.Assignment) -> HealthCheck | None:
    """The check an agent runs for an assignment (see effective_check)."""
    own = health_from_pb(assignment.health) if assignment.health.type else HealthCheck()
    return effective_check(assignment.type, own)
