"""A process type's `[TYPE.deploy]` settings (issue 11): how a rollout replaces its instances,
as Kubernetes' maxSurge/maxUnavailable and Nomad's min_healthy_time, healthy_deadline and
auto_revert. They travel with the release and are stored with it; deploys do not use them yet
(they still restart every instance at once).

Unset is None, because the defaults depend on the type (common/appdef.py effective_deploy
knows which type is which; fill() and conflict() here take what they need of it). Pure: no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.fieldchecks import AppDefError, check_seconds, shown
from common.limits import MAX_DEPLOY_COUNT, MAX_DEPLOY_SECONDS

DEFAULT_MIN_HEALTHY_TIME = 2.0
DEFAULT_HEALTHY_DEADLINE = 60.0
DEFAULT_AUTO_REVERT = True
DEFAULT_SHARE = "25%"  # the surge of a type that surges, the unavailable of one that does not

Amount = int | str  # instances: a count (3), or a whole percent of the desired count ("25%")
_PERCENT = re.compile(r"(0|[1-9][0-9]{0,2})%")  # as Kubernetes' IntOrString: no "12.5%"


@dataclass(frozen=True)
class DeploySettings:
    """A type's deploy settings as given (formation.toml, the API, etcd); None is unset."""
    max_surge: Amount | None = None        # instances above the desired count
    max_unavailable: Amount | None = None  # instances below it
    min_healthy_time: float | None = None  # seconds healthy before an instance counts
    healthy_deadline: float | None = None  # seconds for a new instance to become healthy
    auto_revert: bool | None = None        # a failed rollout goes back by itself


def fill(d: DeploySettings, surges: bool) -> DeploySettings:
    """d with its unset values filled in: a type that `surges` (it has a health check to say
    a new copy serves) starts new copies first and never goes below its count; the others
    replace a quarter of their instances in place."""
    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value
    return DeploySettings(pick(d.max_surge, DEFAULT_SHARE if surges else 0),
                          pick(d.max_unavailable, 0 if surges else DEFAULT_SHARE),
                          pick(d.min_healthy_time, DEFAULT_MIN_HEALTHY_TIME),
                          pick(d.healthy_deadline, DEFAULT_HEALTHY_DEADLINE),
                          pick(d.auto_revert, DEFAULT_AUTO_REVERT))


def resolve_amount(amount: Amount, desired: int, round_up: bool) -> int:
    """Instances an amount means for a desired count. As Kubernetes: a surge's percent rounds
    up (some surge whenever one is asked for), an unavailable one down (never more down)."""
    if isinstance(amount, int):
        return amount
    share = desired * int(amount[:-1])
    return -(-share // 100) if round_up else share // 100


def check_amount(where: str, key: str, value: Any) -> Amount:
    """A count from 0 to MAX_DEPLOY_COUNT, or a whole percent "0%" to "100%"; never a bool."""
    if isinstance(value, int) and not isinstance(value, bool) \
            and 0 <= value <= MAX_DEPLOY_COUNT:
        return value
    if isinstance(value, str) and _PERCENT.fullmatch(value) and int(value[:-1]) <= 100:
        return value
    raise AppDefError(f"{where}: {key} must be a count from 0 to {MAX_DEPLOY_COUNT} or a "
                      f"percent from \"0%\" to \"100%\", not {shown(value)}")


def check_deadline(where: str, key: str, value: Any) -> float:
    """healthy_deadline: seconds as check_seconds, but not 0 (no instance could make it)."""
    try:
        seconds = check_seconds(where, key, value, 0, MAX_DEPLOY_SECONDS)
    except AppDefError:
        seconds = 0.0  # one message for every wrong value
    if seconds <= 0:
        raise AppDefError(f"{where}: {key} must be a number of seconds above 0, at most "
                          f"{MAX_DEPLOY_SECONDS:g}, not {shown(value)}")
    return float(value)


def check_auto_revert(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise AppDefError(f"{where}: {key} must be true or false, not {shown(value)}")
    return value


def check_values(where: str, d: DeploySettings, prefix: str = "") -> DeploySettings:
    """Each set value on its own; keys are named `prefix + key` (the API: "deploy max_surge")."""
    for key in ("max_surge", "max_unavailable"):
        if getattr(d, key) is not None:
            check_amount(where, prefix + key, getattr(d, key))
    if d.min_healthy_time is not None:
        check_seconds(where, prefix + "min_healthy_time", d.min_healthy_time, 0,
                      MAX_DEPLOY_SECONDS)
    if d.healthy_deadline is not None:
        check_deadline(where, prefix + "healthy_deadline", d.healthy_deadline)
    if d.auto_revert is not None:
        check_auto_revert(where, prefix + "auto_revert", d.auto_revert)
    return d


def conflict(d: DeploySettings, surges: bool, at_most_once: bool, kind: str,
             prefix: str = "") -> tuple[str, str] | None:
    """The first rule between valid values (filled as fill(d, surges)) that they break: (the
    key to point a message at, the message), else None. `kind` names the type's sort for the
    message ("a type with a health check")."""
    e = fill(d, surges)
    assert e.max_surge is not None and e.max_unavailable is not None
    # Zero at the largest count is zero at every count.
    surge = resolve_amount(e.max_surge, MAX_DEPLOY_COUNT, True)
    if at_most_once and surge:
        return "max_surge", (f"{prefix}max_surge must be 0 for an at_most_once type: it always "
                             f"stops the old copy before the new one starts")
    if not surge and not resolve_amount(e.max_unavailable, MAX_DEPLOY_COUNT, False):
        unset = "max_surge" if d.max_surge is None else \
            "max_unavailable" if d.max_unavailable is None else ""
        why = f" ({prefix}{unset} is 0 by default for {kind})" if unset else ""
        return ("max_surge" if d.max_unavailable is None else "max_unavailable",
                f"{prefix}max_surge and max_unavailable cannot both be 0{why}: no instance "
                f"could ever be replaced")
    assert e.healthy_deadline is not None and e.min_healthy_time is not None
    if e.healthy_deadline < e.min_healthy_time:
        default = " (the default)" if d.healthy_deadline is None else ""
        return ("min_healthy_time" if d.healthy_deadline is None else "healthy_deadline",
                f"{prefix}healthy_deadline {e.healthy_deadline:g}{default} is below "
                f"min_healthy_time {e.min_healthy_time:g}")
    return None
