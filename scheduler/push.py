"""Pushing each agent its whole assignment list, when it differs from the last one sent on
that stream (level-triggered: the agent converges to whatever list it got last)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.appdef import DEFAULT_STOP_TIMEOUT
from common.appdef_pb import health_to_pb
from common.limits import MAX_LIST_BYTES
from common.names import RELEASE_TYPE
from proto import formation_pb2 as pb
from scheduler import instruments
from scheduler.agents import AgentEntry, Session
from scheduler.endpoints import Item
from scheduler.placement import InstanceKey
from scheduler.world import World, runs_release

log = logging.getLogger("scheduler")


def _always() -> bool:
    return True


@dataclass(frozen=True)
class LinkTimes:
    """What every list tells its agent about silence (docs/failure-model.md), and about
    whose list it is: the leader's epoch (an agent ignores lists of an older one). Nothing is
    pushed unless `leads()` says the leader's lease is sure to be alive (replica.py)."""
    agent_ttl: float
    fence_after: float  # 0: derived, 60 % of agent_ttl
    epoch: int = 0
    leads: Callable[[], bool] = field(default=_always, compare=False)

    @property
    def fence(self) -> float:
        return self.fence_after or 0.6 * self.agent_ttl


def assignment_message(world: World, key: InstanceKey, version: int, generation: int
                       ) -> pb.Assignment:
    """One item of a list; its env travels once per release, in the list's `envs`."""
    release = world.apps.releases[key.app][version]
    if key.type == RELEASE_TYPE:  # its release phase: run once, within its timeout
        return pb.Assignment(
            app=key.app, id=key.id, type=key.type, release=version, generation=generation,
            command=release.release_command, stop_timeout=DEFAULT_STOP_TIMEOUT,
            at_most_once=True, oneshot=True, timeout=release.release_timeout)
    ptype = release.types[key.type]
    return pb.Assignment(
        app=key.app, id=key.id, type=key.type, release=version, generation=generation,
        command=ptype.command,
        stop_timeout=ptype.stop_timeout, at_most_once=ptype.at_most_once,
        health=health_to_pb(ptype.health))


def list_message(world: World, items: list[tuple[InstanceKey, int, int]], times: LinkTimes
                 ) -> pb.SchedulerMessage:
    releases = sorted({(k.app, version) for k, version, _ in items})
    return pb.SchedulerMessage(assignments=pb.Assignments(
        items=[assignment_message(world, k, v, g) for k, v, g in items],
        envs=[pb.ReleaseEnv(app=app, release=v, env=world.apps.releases[app][v].env)
              for app, v in releases],
        fence_after=times.fence, agent_ttl=times.agent_ttl, epoch=times.epoch))


def _withheld(world: World, entry: AgentEntry, session: Session, key: InstanceKey,
              version: int) -> bool:
    """A release phase's run runs once: one already sent (to an earlier session of its agent,
    or before this scheduler started) goes only to a session that got it or reports it; an
    agent that came back without it does not get it again (releasephase.py fails it). And
    `release.K` on another release than vK is an instance of a type named `release` from
    before the release phase: never sent (strays() removes it)."""
    if key not in world.release_runs:
        return False
    return version != key.number or (key in world.delivered and key not in session.given
                                     and key not in entry.reports)


def push(world: World, entry: AgentEntry, times: LinkTimes, force: bool = False,
         items: list[Item] | None = None, kept: Sequence[Item] = ()) -> bool:
    """Queue the agent's list (`items`, computed if not given, plus the copies it `kept`
    while load balancers deregister them: endpoints.py) on its session if it changed (or
    `force`); True if sent."""
    session = entry.session
    if session is None:
        return False
    if not times.leads():  # a deposed leader's list could undo the new one's
        instruments.WITHHELD_PUSHES.inc()
        return False
    if items is None:
        items = world.list_for(entry.record.name)
    if kept:
        items = _with_kept(world, entry, items, kept)
    if world.release_runs:
        items = [i for i in items if not _withheld(world, entry, session, i[0], i[1])]
    fingerprint = tuple(items)
    if not force and session.last_sent == fingerprint:
        return False  # checked before building messages: this runs for every agent, every pass
    message = list_message(world, items, times)
    size = message.ByteSize()
    if size > MAX_LIST_BYTES:  # it would never arrive: keep the old list, say so, retry later
        if not session.too_large:
            session.too_large = True
            log.error("agent %s: its list of %d instances is %d bytes, over the link's limit "
                      "of %d; it keeps its previous list", entry.record.name, len(items), size,
                      MAX_LIST_BYTES)
        return False
    session.too_large = False
    session.last_sent = fingerprint
    session.given.update(k for k, _, _ in items)
    world.delivered.update(k for k, _, _ in items if k in world.release_runs)
    session.outbox.put_nowait(message)
    return True


def _with_kept(world: World, entry: AgentEntry, items: list[Item], kept: Sequence[Item]
               ) -> list[Item]:
    """items plus the kept copies not in them that the agent reports running: a list never
    starts a copy again (one the agent fenced, or lost in a restart); a kept copy of a pruned
    release is let go."""
    have = set(items)
    extra = [i for i in kept if i not in have and i[1] in world.apps.releases.get(i[0].app, {})
             and runs_release(entry.report(*i), i[1])]
    return sorted(items + extra) if extra else items


def push_all(world: World, times: LinkTimes, lists: dict[str, list[Item]] | None = None,
             kept: dict[str, list[Item]] | None = None) -> None:
    """Push every agent its list (from `lists` where given), with the copies it `kept`."""
    lists, kept = lists or {}, kept or {}
    for name, entry in world.agents.entries.items():
        push(world, entry, times, items=lists.get(name), kept=kept.get(name, []))
