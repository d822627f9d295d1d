"""What a new release holds, from what makes it: a deploy, a config change, a rollback. Pure:
each function takes the app's releases as they are and returns the new release's content, or
raises Rejected. The reconciler calls them under its lock, so two changes never race.

Config vars live in the release (its env) and persist from release to release: a deploy's
--env sets vars on top of the current ones; `ctl config unset` is the way to drop one.
Counts (the formation) are never part of a release: no deploy, config change or rollback
changes them.
"""
from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

import grpc

from common.appdef import (
    DEFAULT_RELEASE_TIMEOUT,
    ProcessType,
    Release,
    check_env,
    check_env_name,
    check_release,
)
from scheduler.errors import Rejected

MAX_NAMES_SHOWN = 5  # config var names a description lists before "and N more"


@dataclass(frozen=True)
class Content:
    """A new release but its version, time and author."""
    types: dict[str, ProcessType]
    env: dict[str, str]
    description: str
    event: str = "release"  # its kind in `ctl events`: "release", or "config" (names only)
    release_command: str = ""  # its release phase, "" for none ...
    release_timeout: float = DEFAULT_RELEASE_TIMEOUT
    run_release: bool = True   # ... run before its rollout (a rollback: only if asked)


def deployed(current: Release | None, types: dict[str, ProcessType],
             env: Mapping[str, str], release_command: str = "",
             release_timeout: float = DEFAULT_RELEASE_TIMEOUT) -> Content:
    merged = {**(current.env if current else {}), **env}
    # the merged env must fit the bounds too
    check_release(types, merged, release_command, release_timeout)
    return Content(types, merged, "Deploy", release_command=release_command,
                   release_timeout=release_timeout)


def _names(verb: str, names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return f"{verb} {shown}" + (f" and {more} more" if more > 0 else "")


def configured(current: Release | None, set_: Mapping[str, str],
               unset: list[str]) -> Content | None:
    """The release a config change makes, or None if the env would stay the same."""
    if current is None:
        raise Rejected("the app has no release yet: run 'ctl deploy PROCFILE' first",
                       grpc.StatusCode.FAILED_PRECONDITION)
    if not set_ and not unset:
        raise Rejected("nothing to change: give KEY=VALUE to set or KEY to unset")
    for name in unset:
        check_env_name("unset", name)
    both = sorted(set(set_) & set(unset))
    if both:
        raise Rejected(f"{both[0]} is both set and unset")
    env = {k: v for k, v in current.env.items() if k not in unset}
    env.update(check_env(set_, "set"))
    check_release(current.types, env, current.release_command, current.release_timeout)
    if env == current.env:
        return None
    changed = sorted(k for k in set_ if current.env.get(k) != set_[k])
    gone = sorted(k for k in set(unset) if k in current.env)
    what = "; ".join(part for part in (changed and _names("Set", changed),
                                       gone and _names("Unset", gone)) if part)
    # Heroku's: a config change runs the release phase too (it may use the changed vars).
    return Content(dict(current.types), env, what, event="config",
                   release_command=current.release_command,
                   release_timeout=current.release_timeout)


def rollback_target(releases: Mapping[int, Release], current: int, version: int,
                    bad: Set[int] = frozenset()) -> Release:
    """The release a rollback copies: `version`, or (0) the newest before the current one that
    did not fail (`bad`: those whose rollout failed, was reverted or was superseded)."""
    if not releases:
        raise Rejected("the app has no release yet", grpc.StatusCode.FAILED_PRECONDITION)
    if version == 0:
        earlier = [v for v in releases if v < current]
        if not earlier:
            raise Rejected(f"nothing to roll back to: v{current} is the app's first release "
                           "still kept", grpc.StatusCode.FAILED_PRECONDITION)
        fine = [v for v in earlier if v not in bad]
        if not fine:
            raise Rejected(f"nothing to roll back to: no release before v{current} still kept "
                           "rolled out fine (name one: ctl rollback vN)",
                           grpc.StatusCode.FAILED_PRECONDITION)
        version = max(fine)
    if version < 0:
        raise Rejected(f"invalid release v{version}")
    if version == current:
        raise Rejected(f"v{version} is the current release already",
                       grpc.StatusCode.FAILED_PRECONDITION)
    target = releases.get(version)
    if target is None:
        raise Rejected(f"release v{version} is not kept (the last --release-history releases "
                       "are)", grpc.StatusCode.NOT_FOUND)
    return target


def rolled_back(target: Release, run_release: bool = False) -> Content:
    """A rollback's release: vN's code, settings and config. Its release phase runs again
    only if asked (`ctl rollback --run-release`): a migration run backwards is a hazard."""
    return Content(dict(target.types), dict(target.env), f"Rollback to v{target.version}",
                   release_command=target.release_command,
                   release_timeout=target.release_timeout,
                   run_release=run_release and bool(target.release_command))
