"""An in-memory stand-in for scheduler.store.Store with etcd's revision semantics, for tests of
the reconciler that need no etcd: every write makes a new revision, guarded writes compare each
key's mod_revision, and `outside_write` plays another writer."""
from __future__ import annotations

from collections.abc import Mapping

from common.appdef import Release
from scheduler.placement import Assigned, InstanceKey
from scheduler.records import AgentRecord, Rollout, ScaleRecord, Snapshot, scales_json
from scheduler.store import Conflict, StoreUnavailable


class MemStore:
    def __init__(self) -> None:
        self.revision = 0
        self.snap = Snapshot()
        self.down = False  # raise StoreUnavailable on every call
        self.writes = 0
        self.request_seconds = lambda op, s: None

    def _next(self) -> int:
        if self.down:
            raise StoreUnavailable("etcd unavailable (test)")
        self.revision += 1
        self.writes += 1
        return self.revision

    async def load(self, subtree: str = "") -> Snapshot:
        if self.down:
            raise StoreUnavailable("etcd unavailable (test)")
        s = self.snap
        return Snapshot(
            releases={a: dict(v) for a, v in s.releases.items()}, current=dict(s.current),
            formation=dict(s.formation), rollouts=dict(s.rollouts), agents=dict(s.agents),
            assignments=dict(s.assignments), assignment_revisions=dict(s.assignment_revisions),
            app_revisions=dict(s.app_revisions), revision=self.revision)

    async def create_release(self, app: str, release: Release) -> int:
        if release.version in self.snap.releases.get(app, {}):
            return 0
        rev = self._next()
        self.snap.releases.setdefault(app, {})[release.version] = release
        self.snap.current[app] = release.version
        self.snap.app_revisions[f"apps/{app}/releases/{release.version}"] = rev
        self.snap.app_revisions[f"apps/{app}/current"] = rev
        return rev

    async def set_formation(self, app: str, counts: dict[str, int],
                            history: list[ScaleRecord] | None = None
                            ) -> tuple[int, list[ScaleRecord] | None]:
        rev = self._next()
        for t, n in counts.items():
            self.snap.formation[(app, t)] = n
            self.snap.app_revisions[f"apps/{app}/formation/{t}"] = rev
        kept = None
        if history is not None:
            kept = scales_json(history)[1]
            self.snap.scales[app] = kept
            self.snap.app_revisions[f"apps/{app}/scales"] = rev
        return rev, kept

    async def put_rollout(self, app: str, record: Rollout) -> int:
        rev = self._next()
        self.snap.rollouts[app] = record
        self.snap.app_revisions[f"apps/{app}/rollout"] = rev
        return rev

    async def revert(self, app: str, version: int, record: Rollout) -> int:
        rev = self._next()
        self.snap.current[app] = version
        self.snap.rollouts[app] = record
        self.snap.app_revisions[f"apps/{app}/current"] = rev
        self.snap.app_revisions[f"apps/{app}/rollout"] = rev
        return rev

    async def drop_releases(self, app: str, versions: list[int]) -> None:
        self._next()
        for v in versions:
            self.snap.releases[app].pop(v, None)
            self.snap.app_revisions.pop(f"apps/{app}/releases/{v}", None)

    async def put_agent(self, record: AgentRecord) -> None:
        self._next()
        self.snap.agents[record.name] = record

    async def delete_agent(self, name: str) -> None:
        self._next()
        self.snap.agents.pop(name, None)

    async def write_assignments(self, changes: Mapping[InstanceKey, Assigned | None],
                                expected: Mapping[InstanceKey, int]) -> dict[InstanceKey, int]:
        revs = self.snap.assignment_revisions
        if any(revs.get(k, 0) != expected.get(k, 0) for k in changes):
            raise Conflict("a key changed since it was read")
        rev = self._next()
        out = {}
        for key, where in changes.items():
            if where is None:
                self.snap.assignments.pop(key, None)
                revs.pop(key, None)
            else:
                self.snap.assignments[key] = where
                revs[key] = out[key] = rev
        return out

    def outside_write(self, key: InstanceKey, where: Assigned | None) -> None:
        """Another writer changes an assignment behind the scheduler's back."""
        rev = self._next()
        if where is None:
            self.snap.assignments.pop(key, None)
            self.snap.assignment_revisions.pop(key, None)
        else:
            self.snap.assignments[key] = where
            self.snap.assignment_revisions[key] = rev
