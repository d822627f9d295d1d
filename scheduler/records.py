"""What Formation keeps in etcd, decoded: the records, a snapshot of the whole tree, watch
events. Pure: store.py does the reading and writing.

Layout under the prefix (default `/formation`):

    apps/<app>/releases/<version>   Release JSON
    apps/<app>/current              current release version
    apps/<app>/formation/<type>     desired count
    apps/<app>/scales               JSON list of the last changes of counts (ScaleRecord)
    apps/<app>/events               JSON list of the app's last events (eventlog.Event)
    apps/<app>/rollout              the app's last rollout and its releases' outcomes (Rollout)
    agents/<name>                   AgentRecord JSON
    assignments/<app>/<instance>    Assigned JSON {agent, release[, previous, previous_release]}
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace

from common.appdef import Release
from scheduler.eventlog import Event, decode_events
from scheduler.placement import Assigned, InstanceKey

log = logging.getLogger("scheduler.store")


@dataclass
class AgentRecord:
    """What etcd keeps of an agent, so a new scheduler knows it before it reconnects."""
    name: str
    address: str = ""
    capacity: int = 0
    state: str = "ready"  # ready | draining (down is derived from heartbeats, never stored)
    metrics_address: str = ""
    api_address: str = ""
    isolation: str = ""  # how it contains instances: "cgroup" or "process-group"


@dataclass(frozen=True)
class ScaleRecord:
    """One change of an app's counts: who, when, the types it changed before and after."""
    time: float
    author: str
    before: dict[str, int]
    after: dict[str, int]
    undo: bool = False


MAX_SCALE_RECORDS = 100          # changes of counts kept per app ...
MAX_SCALE_BYTES = 256 * 1024     # ... and their JSON size at most (an etcd request < 1.5 MiB)


def scales_json(records: list[ScaleRecord]) -> tuple[bytes, list[ScaleRecord]]:
    """The newest records that fit the bounds, encoded; and those records."""
    kept = records[-MAX_SCALE_RECORDS:]
    while True:
        data = json.dumps([asdict(r) for r in kept]).encode()
        if len(data) <= MAX_SCALE_BYTES or len(kept) <= 1:
            return data, kept
        kept = kept[len(kept) // 4 or 1:]  # drop the oldest quarter and measure again


def decode_scales(value: bytes) -> list[ScaleRecord]:
    return [ScaleRecord(float(r["time"]), str(r["author"]),
                        {str(k): int(v) for k, v in r["before"].items()},
                        {str(k): int(v) for k, v in r["after"].items()}, bool(r.get("undo")))
            for r in json.loads(value)]


# A rollout's status; a release's outcome is one of the last three.
RELEASING = "releasing"      # its release phase runs; nothing is rolled out yet
ROLLING = "rolling out"
FINISHED = "finished"        # every instance runs it, proven healthy
FAILED = "failed"            # its release phase or its rollout failed; it stays current
REVERTED = "reverted"        # it failed and the release before it is current again
SUPERSEDED = "superseded"    # a newer release came before its rollout finished
ACTIVE = (RELEASING, ROLLING)
MAX_OUTCOMES = 1000          # outcomes kept (releases beyond --release-history are forgotten)


@dataclass
class Rollout:
    """An app's rollout to `release` from `previous` (docs/releases.md). What the planner
    (scheduler/rollout.py) needs remembered across passes and scheduler restarts: when each
    id got its new copy, which ids were proven; and how earlier releases ended."""
    release: int
    previous: int = 0           # the release it replaces (0: none, a first deploy)
    status: str = ROLLING
    started: float = 0.0        # unix seconds
    finished: float = 0.0
    revert: bool = False        # an automatic revert to `release` after `previous` failed
    started_ids: dict[str, float] = field(default_factory=dict)  # id -> its new copy's start
    updated: list[str] = field(default_factory=list)  # ids whose new copy was proven
    outcomes: dict[int, str] = field(default_factory=dict)  # release -> finished|failed|...
    reasons: dict[int, str] = field(default_factory=dict)   # release -> why it failed
    surge: int = 0              # the most copies above the desired count at once (reported)
    generations: dict[str, int] = field(default_factory=dict)  # type -> restart generation
    # The release phase (scheduler/releasephase.py): False until it passed (True if there is
    # none to run); while False, the app runs `previous`, never `release`.
    released: bool = True
    phase_started: float = 0.0  # when its run was assigned (0: not yet)
    phase_seen: bool = False    # its agent has reported the run (`ctl releases`: running)

    def good(self) -> int:
        """The newest release that rolled out fine, 0 if none."""
        return max((v for v, o in self.outcomes.items() if o == FINISHED), default=0)

    def ended(self, outcome: str, why: str, now: float) -> Rollout:
        """This rollout over at `now`, its release's outcome (failed, reverted) and why."""
        return replace(self, status=outcome, finished=now,
                       outcomes={**self.outcomes, self.release: outcome},
                       reasons={**self.reasons, self.release: why})


def rollout_json(r: Rollout) -> bytes:
    data = asdict(r)
    data["outcomes"] = {str(v): o for v, o in sorted(r.outcomes.items())[-MAX_OUTCOMES:]}
    data["reasons"] = {str(v): o for v, o in sorted(r.reasons.items())[-MAX_OUTCOMES:]}
    return json.dumps(data).encode()


def decode_rollout(value: bytes) -> Rollout:
    raw = json.loads(value)
    return Rollout(
        int(raw["release"]), int(raw.get("previous", 0)), str(raw["status"]),
        started=float(raw.get("started", 0)), finished=float(raw.get("finished", 0)),
        revert=bool(raw.get("revert", False)),
        started_ids={str(k): float(v) for k, v in raw.get("started_ids", {}).items()},
        updated=[str(i) for i in raw.get("updated", [])],
        outcomes={int(k): str(v) for k, v in raw.get("outcomes", {}).items()},
        reasons={int(k): str(v) for k, v in raw.get("reasons", {}).items()},
        surge=int(raw.get("surge", 0)),
        generations={str(k): int(v) for k, v in raw.get("generations", {}).items()},
        released=bool(raw.get("released", True)),
        phase_started=float(raw.get("phase_started", 0)),
        phase_seen=bool(raw.get("phase_seen", False)))


@dataclass
class Snapshot:
    """Everything under the prefix, decoded."""
    releases: dict[str, dict[int, Release]] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    formation: dict[tuple[str, str], int] = field(default_factory=dict)
    scales: dict[str, list[ScaleRecord]] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    assignments: dict[InstanceKey, Assigned] = field(default_factory=dict)
    assignment_revisions: dict[InstanceKey, int] = field(default_factory=dict)  # mod_revision
    app_revisions: dict[str, int] = field(default_factory=dict)  # "apps/a/current" -> mod_rev
    revision: int = 0


@dataclass(frozen=True)
class AppEvent:
    """One change under apps/ seen by the watch: `value` None for a delete."""
    path: str  # relative to the prefix: "apps/<app>/formation/<type>"
    value: bytes | None
    revision: int


def decode(snap: Snapshot, parts: list[str], value: bytes) -> None:
    """Add one key (its path split at "/") to snap; an undecodable one is logged, skipped."""
    try:
        match parts:
            case ["apps", app, "releases", version]:
                snap.releases.setdefault(app, {})[int(version)] = Release.from_json(value)
            case ["apps", app, "current"]:
                snap.current[app] = int(value)
            case ["apps", app, "formation", ptype]:
                snap.formation[(app, ptype)] = int(value)
            case ["apps", app, "scales"]:
                snap.scales[app] = decode_scales(value)
            case ["apps", app, "events"]:
                snap.events[app] = decode_events(value)
            case ["apps", app, "rollout"]:
                snap.rollouts[app] = decode_rollout(value)
            case ["agents", name]:
                snap.agents[name] = AgentRecord(**json.loads(value))
            case ["assignments", app, iid]:
                raw = json.loads(value)
                snap.assignments[InstanceKey(app, iid)] = Assigned(
                    raw["agent"], int(raw["release"]), raw.get("previous", ""),
                    int(raw.get("previous_release", 0)), int(raw.get("generation", 0)),
                    int(raw.get("previous_generation", 0)))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring undecodable key %s: %s", "/".join(parts), e)


def assigned_json(a: Assigned) -> bytes:
    out: dict[str, str | int] = {"agent": a.agent, "release": a.release}
    if a.generation:
        out["generation"] = a.generation
    if a.previous:
        out |= {"previous": a.previous, "previous_release": a.old_release,
                "previous_generation": a.previous_generation}
    return json.dumps(out).encode()
