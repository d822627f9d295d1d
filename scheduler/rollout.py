"""Rolling updates, the pure core (issue 11): for ONE process type moving from release `old` to
release `new`, what to do next. No I/O, no clock (`now` is passed in); not wired in yet.

Instance ids stay stable, like Heroku's dynos: `web.3` is updated by giving it a copy on the new
release, then retiring its copy on the old one. One id's steps:

    surge slot (budget in max_surge; never for at_most_once): like a drain handoff
      old  ══ healthy ══════════════════════════════════╗ stop_old ─> stopping ─> gone
      new      start_new ─> starting ─> healthy ──(min_healthy_time)──> proven: updated
    unavailable slot (no surge budget, max_surge 0, at_most_once): stop first
      old  ══ healthy ══╗ stop_old ─> stopping ─> gone (reported stopped)
      new                                          └─ start_new ─> starting ─> healthy ─> updated

Each step looks at the state it is shown (copies it stopped count until reported gone) and
keeps two budgets, the way Kubernetes does with maxSurge and maxUnavailable:
    copies (old and new, every id)                + start_new         <= desired + max_surge
    serving (healthy old copies, proven new ones) - healthy stop_old  >= desired - max_unavailable
A new copy serves for the floor only once proven (healthy for min_healthy_time): one that has
just turned healthy may crash yet. An old copy that does not serve (starting, unhealthy,
crashed) is replaced stop-first whatever the budgets: stopping it costs no service.

A step, ids in ascending order (lower ids first, in every bucket):
  1. failed?  a new copy not proven within healthy_deadline of its start, or the crash-loop
     breaker (see `breaker`): then nothing else. The caller records the failure and asks
     no more (a failure can clear itself, say a late proof): the revert is a new rollout;
  2. retire the old copy of every id whose new copy is proven (floor permitting);
  3. start a new copy on every id that has no copy at all (cap permitting): an unavailable
     slot whose old copy is gone, or an id added by a scale-up;
  4. every other id with only an old copy: stop it if it does not serve, else surge (cap),
     else stop it first (floor), else wait.

Scaling during a rollout: ids are `TYPE.1` … `TYPE.desired`; new ids get the new release
directly (step 3). Ids above `desired` (see `beyond`) are placement's scale-down: the planner
never starts or stops them, never counts them as serving, but counts their copies against the
cap until they are gone and their failures for the breaker. Re-resolve the settings with
`settings_for(new desired, …)` when the count changes.

What the caller keeps per id (`Slot`): on start_new, `started = now` and `updated = False`;
on `Step.proven`, `updated = True`; every crash and every failed check of the new copy adds to
`crashes` / `failed_checks`. A revert is the same planner on `reverted(slots, now)`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeGuard

from common.deploysettings import (
    DEFAULT_HEALTHY_DEADLINE,
    DEFAULT_MIN_HEALTHY_TIME,
    check_amount,
    resolve_amount,
)
from common.limits import MAX_DEPLOY_COUNT
from common.names import instance_id, split_instance_id


class State(Enum):
    """A copy's state as the planner needs it, from its agent's report."""
    STARTING = "starting"    # pending, starting, or restarting after a crash's backoff
    HEALTHY = "healthy"      # the agent's `running`: checks pass (or it has none); it serves
    UNHEALTHY = "unhealthy"  # up, failing its checks
    CRASHED = "crashed"      # exited; its agent restarts it after the backoff
    STOPPING = "stopping"    # asked to stop, not gone yet: still holds its slot
    STOPPED = "stopped"      # gone: the same as no copy


@dataclass(frozen=True)
class Copy:
    state: State
    since: float = 0.0  # when it entered `state` (HEALTHY: healthy since)


@dataclass(frozen=True)
class Slot:
    """One instance id: its copy on the old release, its copy on the new one."""
    old: Copy | None = None
    new: Copy | None = None
    started: float | None = None  # when start_new last gave it a new copy
    crashes: int = 0              # of its new copies, this rollout
    failed_checks: int = 0
    updated: bool = False         # its new copy was proven once (Step.proven)


EMPTY = Slot()


@dataclass(frozen=True)
class Settings:
    """A type's rollout settings, resolved to counts for its desired count (settings_for)."""
    max_surge: int
    max_unavailable: int
    min_healthy_time: float = DEFAULT_MIN_HEALTHY_TIME
    healthy_deadline: float = DEFAULT_HEALTHY_DEADLINE
    at_most_once: bool = False

    def __post_init__(self) -> None:
        # The planner relies on these: each one broken would stall a rollout or run two copies.
        if self.max_surge < 0 or self.max_unavailable < 0:
            raise ValueError("max_surge and max_unavailable must not be negative")
        if self.max_surge == self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: no instance "
                             "could ever be replaced")
        if self.at_most_once and (self.max_surge or not self.max_unavailable):
            raise ValueError("an at_most_once type needs max_surge 0 and max_unavailable >= 1")
        if not 0 <= self.min_healthy_time <= self.healthy_deadline:
            raise ValueError(f"min_healthy_time {self.min_healthy_time:g} must be from 0 to "
                             f"healthy_deadline {self.healthy_deadline:g}")


@dataclass(frozen=True)
class Progress:
    """For `ctl deploy --wait`: updated / healthy / total."""
    updated: int  # ids whose new copy is proven and whose old copy is gone
    healthy: int  # ids whose new copy is healthy now
    total: int    # desired


@dataclass(frozen=True)
class Step:
    """What to do now; every bucket in ascending id order."""
    start_new: tuple[str, ...] = ()  # give these ids a new-release copy
    stop_old: tuple[str, ...] = ()   # stop these ids' old copies (retired, or stop-first)
    proven: tuple[str, ...] = ()     # new copies proven for the first time: set Slot.updated
    done: bool = False               # every id runs a proven new copy and no old one
    failed: str | None = None        # one line; then both action buckets are empty
    progress: Progress = Progress(0, 0, 0)


# The crash-loop breaker trips at max(BREAKER, copies the settings let be in flight at once)
# failures of new copies across the type while none is proven. Fewer could be one unlucky
# instance (a port race, an OOM kill): its agent restarts it at once, so two failures can come
# from one copy within one boot. Three from one copy means the restart 0.5 s later failed too;
# with a copy that exits at once that is ~0.5 s plus three boots, far inside healthy_deadline
# (60 s). A bad release makes every in-flight copy fail in the first round, so scaling with the
# parallelism costs it nothing, while a large rollout (25 copies at once) is not failed by the
# few copies that one broken host can crash before the first new copy is proven.
BREAKER = 3


def breaker(settings: Settings, desired: int) -> int:
    return max(BREAKER, min(settings.max_surge + settings.max_unavailable, desired))


def resolve(spec: str | int, desired: int, round_up: bool, key: str = "amount") -> int:
    """A count (2) or a whole percent of `desired` ("25%", 0 to 100) as a count. As Kubernetes:
    a surge rounds up (some surge whenever one is asked for), an unavailable one down. The
    grammar is formation.toml's (common/deploysettings.py); a bad spec is a one-line
    ValueError naming `key`."""
    return resolve_amount(check_amount("rollout", key, spec), desired, round_up)


def settings_for(desired: int, max_surge: str | int, max_unavailable: str | int,
                 min_healthy_time: float = DEFAULT_MIN_HEALTHY_TIME,
                 healthy_deadline: float = DEFAULT_HEALTHY_DEADLINE,
                 at_most_once: bool = False) -> Settings:
    """Settings for a desired count. Progress is always possible: if both resolve to 0, the
    one that is not 0 at every count is 1 (max_surge if both are); an at_most_once type never
    surges and replaces at least one at a time."""
    # More than the count means no more than the count.
    surge = min(resolve(max_surge, desired, True, "max_surge"), desired)
    unavailable = min(resolve(max_unavailable, desired, False, "max_unavailable"), desired)
    if at_most_once:
        surge, unavailable = 0, max(1, unavailable)
    elif surge == unavailable == 0:
        # Both came to 0 for a small count: one more of the kind that was asked for (a
        # "25%" unavailable of 2 is 1 down, not a surge the type never wanted).
        if resolve(max_surge, MAX_DEPLOY_COUNT, True, "max_surge") \
                or not resolve(max_unavailable, MAX_DEPLOY_COUNT, False, "max_unavailable"):
            surge = 1
        else:
            unavailable = 1
    return Settings(surge, unavailable, min_healthy_time, healthy_deadline, at_most_once)


def _exists(c: Copy | None) -> TypeGuard[Copy]:
    return c is not None and c.state is not State.STOPPED


def _live(c: Copy | None) -> TypeGuard[Copy]:
    """Exists and the planner may still stop it."""
    return c is not None and c.state not in (State.STOPPED, State.STOPPING)


def _number(ptype: str, iid: str) -> int:
    kind, n = split_instance_id(iid)
    if kind != ptype:
        raise ValueError(f"{iid!r} is not an instance of {ptype!r}")
    return n


def beyond(ptype: str, desired: int, slots: Mapping[str, Slot]) -> list[str]:
    """Ids above the desired count that still have a copy: placement's to stop, not ours."""
    return sorted((i for i, s in slots.items() if _number(ptype, i) > desired
                   and (_exists(s.old) or _exists(s.new))), key=lambda i: _number(ptype, i))


def reverted(slots: Mapping[str, Slot], now: float) -> dict[str, Slot]:
    """The view for rolling back: copies on the failed release become the old ones, those on
    the release before it the new ones, started now; failure counts start over."""
    return {i: Slot(old=s.new, new=s.old, started=now if _exists(s.old) else None)
            for i, s in slots.items()}


def next_step(ptype: str, desired: int, slots: Mapping[str, Slot], settings: Settings,
              now: float) -> Step:
    """What to do now for `ptype`'s ids 1..desired; `slots` by id (a missing id: no copy)."""
    ids = [instance_id(ptype, n) for n in range(1, desired + 1)]
    view = {i: slots.get(i, EMPTY) for i in ids}
    for i in slots.keys() - view.keys():
        _number(ptype, i)  # ids above desired are fine; another type's would be a wiring bug

    def proven(s: Slot) -> bool:  # healthy now, for min_healthy_time
        return s.new is not None and s.new.state is State.HEALTHY \
            and now - s.new.since >= settings.min_healthy_time

    def updated(s: Slot) -> bool:  # proven once; later crashes are its agent's business
        return proven(s) or (s.updated and _live(s.new))

    progress = Progress(
        updated=sum(1 for s in view.values() if updated(s) and not _exists(s.old)),
        healthy=sum(1 for s in view.values() if s.new is not None
                    and s.new.state is State.HEALTHY),
        total=desired)
    failed = _failure(ptype, desired, view, slots, settings, now, updated)
    if failed is not None:
        return Step(failed=failed, progress=progress)

    floor = desired - settings.max_unavailable
    room = desired + settings.max_surge - sum(_exists(s.old) + _exists(s.new)
                                              for s in slots.values())
    serving = sum(1 for s in view.values() if _live(s.old) and s.old.state is State.HEALTHY) \
        + sum(1 for s in view.values() if proven(s))
    start: list[str] = []
    stop: list[str] = []

    def stop_first(i: str, old: Copy) -> None:
        nonlocal serving
        if old.state is State.HEALTHY:
            if serving - 1 < floor:
                return
            serving -= 1
        stop.append(i)

    for i, s in view.items():  # 2. retire
        if _live(s.old) and proven(s):
            stop_first(i, s.old)
    for i, s in view.items():  # 3. no copy at all
        if not _exists(s.old) and not _exists(s.new) and room > 0:
            start.append(i)
            room -= 1
    surge = settings.max_surge > 0 and not settings.at_most_once
    for i, s in view.items():  # 4. only an old copy
        if not _live(s.old) or _exists(s.new):
            continue
        if s.old.state is not State.HEALTHY:
            stop.append(i)
        elif surge and room > 0:
            start.append(i)
            room -= 1
        else:
            stop_first(i, s.old)

    number = {i: n for n, i in enumerate(ids)}
    return Step(start_new=tuple(sorted(start, key=number.__getitem__)),
                stop_old=tuple(sorted(stop, key=number.__getitem__)),
                proven=tuple(i for i, s in view.items() if proven(s) and not s.updated),
                done=all(updated(s) and not _exists(s.old) for s in view.values()),
                progress=progress)


def _failure(ptype: str, desired: int, view: Mapping[str, Slot], slots: Mapping[str, Slot],
             settings: Settings, now: float, updated: Callable[[Slot], bool]) -> str | None:
    failures = sum(s.crashes + s.failed_checks for s in slots.values())
    if failures >= breaker(settings, desired) and not any(updated(s) for s in slots.values()):
        return (f"crash-loop breaker: new {ptype} copies crashed or failed their checks "
                f"{failures} times and none has been healthy for "
                f"{settings.min_healthy_time:g} s")
    for i, s in view.items():
        if _live(s.new) and s.started is not None and not updated(s) \
                and now - s.started > settings.healthy_deadline:
            return (f"{i} was not healthy for {settings.min_healthy_time:g} s within "
                    f"healthy_deadline {settings.healthy_deadline:g} s of its start")
    return None
