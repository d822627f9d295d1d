"""What Formation keeps in etcd, decoded: the records, a snapshot of the whole tree, watch
events. Pure: store.py does the reading and writing.

Layout under the prefix (default `/formation`):

    apps/<app>/releases/<version>   Release JSON
    apps/<app>/current              current release version
    apps/<app>/formation/<type>     desired count
    apps/<app>/scales               JSON list of the last changes of counts (ScaleRecord)
    agents/<name>                   AgentRecord JSON
    assignments/<app>/<instance>    Assigned JSON {agent, release[, previous]}
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from common.appdef import Release
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


@dataclass
class Snapshot:
    """Everything under the prefix, decoded."""
    releases: dict[str, dict[int, Release]] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    formation: dict[tuple[str, str], int] = field(default_factory=dict)
    scales: dict[str, list[ScaleRecord]] = field(default_factory=dict)
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
            case ["agents", name]:
                snap.agents[name] = AgentRecord(**json.loads(value))
            case ["assignments", app, iid]:
                raw = json.loads(value)
                snap.assignments[InstanceKey(app, iid)] = Assigned(
                    raw["agent"], int(raw["release"]), raw.get("previous", ""))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring undecodable key %s: %s", "/".join(parts), e)


def assigned_json(a: Assigned) -> bytes:
    return json.dumps({"agent": a.agent, "release": a.release, "previous": a.previous}
                      if a.previous else {"agent": a.agent, "release": a.release}).encode()
