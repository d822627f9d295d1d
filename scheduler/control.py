"""The Control service: what ctl calls. Validates every input before anything is written, then
calls the scheduler's narrow API; a change is acknowledged only once it is in etcd. Reads are
answered from the read models (readmodels.py), kept up to date as the world changes."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from common.appdef import Release
from common.appdef_pb import release_from_pb
from common.limits import MAX_ENV_VARS
from common.names import check_count, check_name, split_instance_id
from common.states import is_instance_state
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from scheduler import endpointstream, releasephase, releases, rollouts
from scheduler.callers import audit, author_of
from scheduler.errors import Rejected, answer, not_leader
from scheduler.eventlog import MAX_EVENTS, Event, Follower, TooManyFollowers
from scheduler.leadership import NotLeader
from scheduler.logs import MAX_TAIL, AgentChannels, stream_logs
from scheduler.peers import Peers, list_schedulers
from scheduler.reconciler import Scheduler
from scheduler.replica import Replica
from scheduler.rolloutsteps import MAX_RESTART_TARGETS

log = logging.getLogger("scheduler.control")
T = TypeVar("T")
def check_target(text: str) -> str:
    """A restart target: a process type (`web`) or an instance id (`web.3`); else Rejected."""
    try:
        if "." in text:
            split_instance_id(text)
        else:
            check_name("process type", text)
    except ValueError as e:
        raise Rejected(str(e)) from None
    return text

async def _now(value: T) -> T:
    return value


class ControlService(pbg.ControlServicer):
    """Served by the leader (followers forward these calls: forward.py), but ListSchedulers,
    which every replica answers itself."""

    def __init__(self, scheduler: Scheduler | Replica, channels: AgentChannels | None = None,
                 peers: Peers | None = None) -> None:
        self._current = scheduler.current if isinstance(scheduler, Replica) \
            else lambda: scheduler
        self.replica = scheduler if isinstance(scheduler, Replica) else None
        self.channels = channels or AgentChannels()
        self.peers = peers or Peers(None)

    @property
    def s(self) -> Scheduler:
        """The leader's Scheduler of this term; NotLeader once the term is over."""
        s = self._current()
        if s is None:
            raise NotLeader("this scheduler does not lead (any more): try another")
        return s

    async def ListSchedulers(self, request: pb.ListSchedulersRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListSchedulersReply:
        async def run() -> pb.ListSchedulersReply:
            if self.replica is None:
                raise Rejected("no replicas here", grpc.StatusCode.UNIMPLEMENTED)
            return await list_schedulers(self.replica, self.peers)
        return await answer(context, run)

    async def Logs(self, request: pb.LogsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.LogLine]:
        async def check() -> None:
            if request.app:
                check_name("app", request.app)
            if request.selector:
                if "." in request.selector:
                    split_instance_id(request.selector)
                else:
                    check_name("process type", request.selector)
            if not 0 <= request.tail <= MAX_TAIL:
                raise Rejected(f"tail must be 0 to {MAX_TAIL}")
        await answer(context, check)
        agents = (await answer(context, lambda: _now(self.s))).agents
        async for line in stream_logs(agents, self.channels, request):
            yield line

    async def Events(self, request: pb.EventsRequest, context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[pb.EventInfo]:
        """The app's events, oldest first (the last `tail`, 0: all kept); with `follow`, then
        each new one as it happens, until the caller goes away. An app with none (or no app
        of that name) has an empty feed."""
        def info(e: Event, missed: int = 0) -> pb.EventInfo:
            return pb.EventInfo(time=e.time, kind=e.kind, text=e.text, author=e.author,
                                missed=missed)

        async def start() -> tuple[Scheduler, list[Event], Follower | None]:
            app = check_name("app", request.app)
            if not 0 <= request.tail <= MAX_EVENTS:
                raise Rejected(f"tail must be 0 (all kept) to {MAX_EVENTS}")
            s = self.s  # this term's: the feed followed ends with it (a NotLeader)
            try:  # subscribed and listed at once: nothing is missed or sent twice between
                follower = s.events.subscribe(app) if request.follow else None
            except TooManyFollowers as e:
                raise Rejected(str(e), grpc.StatusCode.RESOURCE_EXHAUSTED) from None
            return s, s.events.list(app)[-request.tail:], follower
        s, kept, follower = await answer(context, start)
        try:
            for event in kept:
                yield info(event)
            kept.clear()
            while follower is not None:
                try:
                    missed, event = await follower.get()
                except NotLeader as e:
                    await not_leader(context, str(e))
                yield info(event, missed)
        finally:
            if follower is not None:
                s.events.unsubscribe(request.app, follower)

    async def WatchEndpoints(self, requests: AsyncIterator[pb.EndpointsRequest],
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.EndpointSet]:
        """The endpoints of the types asked for, once and on every change (endpointstream)."""
        try:  # aclosing: a cancelled call unregisters its watcher now, not when collected
            async with contextlib.aclosing(endpointstream.watch(self.s, requests, context)
                                           ) as replies:
                async for reply in replies:
                    yield reply
        except Rejected as e:
            await context.abort(e.code, str(e))
        except ValueError as e:  # a bad app or type name
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotLeader as e:  # the term ended: the watcher follows the new leader
            await not_leader(context, str(e))

    async def Deploy(self, request: pb.DeployRequest, context: grpc.aio.ServicerContext
                     ) -> pb.DeployReply:
        async def run() -> pb.DeployReply:
            app = check_name("app", request.app)
            types, env, command, timeout = release_from_pb(request)
            version = await self.s.deploy(app, types, env, author_of(context, request.author),
                                          command, timeout)
            audit(context, f"deployed {app} v{version}: {len(types)} process types, "
                           f"{len(env)} env variables"  # their names and values never
                  + (", a release phase" if command else ""))
            return pb.DeployReply(version=version)
        return await answer(context, run)

    async def Scale(self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext
                    ) -> pb.ScaleReply:
        async def run() -> pb.ScaleReply:
            app = check_name("app", request.app)
            if request.undo and request.counts:
                raise Rejected("give TYPE=N or undo, not both")
            if not request.counts and not request.undo:
                raise Rejected("nothing to scale: give TYPE=N")
            for ptype, n in request.counts.items():
                check_name("process type", ptype)
                check_count(ptype, n)
            counts = await self.s.scale(app, dict(request.counts),
                                        author_of(context, request.author), request.undo)
            audit(context, f"scaled {app} " + ("back (undo)" if request.undo else " ".join(
                f"{t}={n}" for t, n in sorted(request.counts.items()))))
            return pb.ScaleReply(counts=counts)
        return await answer(context, run)

    async def GetFormation(self, request: pb.GetFormationRequest,
                           context: grpc.aio.ServicerContext) -> pb.FormationReply:
        async def run() -> pb.FormationReply:
            return self.s.read.formation(check_name("app", request.app))
        return await answer(context, run)

    async def ListInstances(self, request: pb.ListInstancesRequest,
                            context: grpc.aio.ServicerContext) -> Any:
        """Answers the encoded reply itself (common/grpcserve.py): no copy per call."""
        async def run() -> bytes:
            if request.app:
                check_name("app", request.app)
            if request.type:
                check_name("process type", request.type)
            if not is_instance_state(request.state):
                raise Rejected(f"unknown instance state {request.state}")
            if request.page_size < 0:
                raise Rejected("page_size must be >= 0")
            return self.s.read.instances(request.app, request.type, request.state,
                                         request.page_size, request.page_token)
        return await answer(context, run)

    async def GetConfig(self, request: pb.GetConfigRequest,
                        context: grpc.aio.ServicerContext) -> pb.ConfigReply:
        async def run() -> pb.ConfigReply:
            current = self.s.world.apps.current_release(check_name("app", request.app))
            if current is None:
                return pb.ConfigReply()
            return pb.ConfigReply(config=current.env, release=current.version)
        return await answer(context, run)

    async def SetConfig(self, request: pb.SetConfigRequest,
                        context: grpc.aio.ServicerContext) -> pb.SetConfigReply:
        async def run() -> pb.SetConfigReply:
            app = check_name("app", request.app)
            if len(request.unset) > MAX_ENV_VARS:
                raise Rejected(f"at most {MAX_ENV_VARS} names to unset")
            author = author_of(context, request.author)
            version, changed = await self.s.new_release(app, lambda cur: releases.configured(
                cur, dict(request.set), list(request.unset)), author)
            if changed:  # names only: values are secrets
                what = self.s.world.apps.releases[app][version].description
                audit(context, f"config of {app}: {what} (v{version})")
            return pb.SetConfigReply(version=version, changed=changed)
        return await answer(context, run)

    async def Rollback(self, request: pb.RollbackRequest,
                       context: grpc.aio.ServicerContext) -> pb.RollbackReply:
        async def run() -> pb.RollbackReply:
            app = check_name("app", request.app)
            author = author_of(context, request.author)
            target: list[int] = []

            def make(current: Release | None) -> releases.Content:
                apps = self.s.world.apps
                record = apps.rollouts.get(app)
                bad = {v for v, o in record.outcomes.items() if o in rollouts.UNFIT} \
                    if record is not None else set()
                found = releases.rollback_target(apps.releases.get(app, {}),
                                                 apps.current.get(app, 0), request.version, bad)
                if request.run_release and not found.release_command:
                    raise Rejected(f"v{found.version} has no release phase to run again "
                                   "(its Procfile had no 'release:' entry)")
                unpassed = rollouts.phase_unpassed(record, found.version)
                if unpassed and found.release_command and not request.run_release:
                    detail = unpassed.removeprefix(f"{rollouts.PHASE_UNPASSED}: ")
                    raise Rejected(f"the release phase of v{found.version} never passed "
                                   f"({detail}): ctl rollback v{found.version} --run-release "
                                   "runs it first", grpc.StatusCode.FAILED_PRECONDITION)
                target.append(found.version)
                return releases.rolled_back(found, request.run_release)
            version, _ = await self.s.new_release(app, make, author)
            audit(context, f"rolled {app} back to v{target[0]} (v{version})"
                  + (", its release phase run again" if request.run_release else ""))
            return pb.RollbackReply(version=version, to=target[0])
        return await answer(context, run)

    async def Restart(self, request: pb.RestartRequest,
                      context: grpc.aio.ServicerContext) -> pb.RestartReply:
        async def run() -> pb.RestartReply:
            app = check_name("app", request.app)
            author = author_of(context, request.author)
            if len(request.targets) > MAX_RESTART_TARGETS:
                raise Rejected(f"at most {MAX_RESTART_TARGETS} types and instances at once")
            targets = [check_target(t) for t in request.targets]
            types, ids, version = await self.s.restart(app, targets, author)
            audit(context, f"restarted {app} {' '.join(targets) or 'every type'}")
            return pb.RestartReply(types=types, instances=ids, release=version)
        return await answer(context, run)

    async def ListScales(self, request: pb.ListScalesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListScalesReply:
        async def run() -> pb.ListScalesReply:
            app = check_name("app", request.app)
            return pb.ListScalesReply(changes=[
                pb.ScaleChange(time=r.time, author=r.author, before=r.before, after=r.after,
                               undo=r.undo)
                for r in reversed(self.s.world.apps.scales.get(app, []))])
        return await answer(context, run)

    async def ListReleases(self, request: pb.ListReleasesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListReleasesReply:
        async def run() -> pb.ListReleasesReply:
            app = check_name("app", request.app)
            world = self.s.world
            apps = world.apps
            current = apps.current.get(app, 0)
            record = apps.rollouts.get(app)
            out = []
            for r in sorted(apps.releases.get(app, {}).values(), key=lambda r: -r.version):
                status, reason = rollouts.release_status(record, current, r.version)
                if reason == rollouts.PHASE_STARTING and releasephase.run_key(
                        app, r.version) not in world.assignments:
                    reason = rollouts.PHASE_WAITING
                looping = r.version == current and any(  # a type running a copy is not
                    not self.s.read.running[(app, t)] and world.crash_looping(app, t)
                    for t in r.types)
                out.append(pb.ReleaseInfo(version=r.version, created=r.created,
                                          author=r.author, description=r.description,
                                          status=status, reason=reason,
                                          crash_looping=looping))
            return pb.ListReleasesReply(releases=out)
        return await answer(context, run)

    async def ListAgents(self, request: pb.ListAgentsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListAgentsReply:
        return self.s.read.agents()

    async def RemoveAgent(self, request: pb.RemoveAgentRequest,
                          context: grpc.aio.ServicerContext) -> pb.RemoveAgentReply:
        async def run() -> pb.RemoveAgentReply:
            await self.s.remove_agent(check_name("agent", request.agent))
            audit(context, f"removed agent {request.agent}")
            return pb.RemoveAgentReply()
        return await answer(context, run)

    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext
                    ) -> pb.DrainReply:
        async def run() -> pb.DrainReply:
            name = check_name("agent", request.agent)
            agent = await self.s.drain(name, request.undo)
            audit(context, f"{'undrained' if request.undo else 'drained'} agent {name}")
            return pb.DrainReply(agent=agent)
        return await answer(context, run)

