"""The Control service: what ctl calls. Validates every input before anything is written;
a change is acknowledged only once it is in etcd."""
from __future__ import annotations

import dataclasses
import time

import grpc

from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg
from common.appdef import Release, is_env_name
from common.appdef_pb import type_from_pb
from common.states import AgentState
from scheduler.core import Scheduler
from scheduler.logs import AgentChannels, stream_logs
from common.names import InvalidName, check_count, check_name, split_instance_id
from scheduler.store import StoreUnavailable


class Rejected(Exception):
    """Input that must be refused with INVALID_ARGUMENT or FAILED_PRECONDITION."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


class ControlService(pbg.ControlServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler
        self.channels = AgentChannels()

    async def Logs(self, request: pb.LogsRequest, context):
        try:
            if request.app:
                check_name("app", request.app)
            if request.selector:
                if "." in request.selector:
                    split_instance_id(request.selector)
                else:
                    check_name("process type", request.selector)
            if request.tail < 0:
                raise ValueError("--tail must be >= 0")
        except ValueError as e:  # InvalidName is a ValueError
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        async for line in stream_logs(self.s, self.channels, request):
            yield line

    async def _guard(self, context: grpc.aio.ServicerContext, fn):
        try:
            return await fn()
        except InvalidName as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Rejected as e:
            await context.abort(e.code, str(e))
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except StoreUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    async def Deploy(self, request: pb.DeployRequest, context) -> pb.DeployReply:
        async def run() -> pb.DeployReply:
            app = check_name("app", request.app)
            if not request.types:
                raise Rejected("a release needs at least one process type")
            types = {t.name: type_from_pb(t) for t in request.types}
            if len(types) != len(request.types):
                raise Rejected("a process type is defined twice")
            for key in request.env:
                if not is_env_name(key):
                    raise Rejected(f"invalid environment variable name {key!r}")
            async with self.s.lock:
                version = max(self.s.releases.get(app, {}), default=0) + 1
                release = Release(version, types, dict(request.env), time.time())
                if not await self.s.store.create_release(app, release):
                    raise Rejected("another deploy of this app won the race; try again",
                                   grpc.StatusCode.ABORTED)
                # Heroku's default: a new app's web type starts with one instance.
                new_counts = {"web": 1} if "web" in types and app not in self.s.current \
                    and (app, "web") not in self.s.formation else {}
                if new_counts:
                    await self.s.store.set_formation(app, new_counts)
                self.s.releases.setdefault(app, {})[version] = release
                self.s.current[app] = version
                self.s.formation.update({(app, t): n for t, n in new_counts.items()})
            self.s.poke()
            return pb.DeployReply(version=version)
        return await self._guard(context, run)

    async def Scale(self, request: pb.ScaleRequest, context) -> pb.ScaleReply:
        async def run() -> pb.ScaleReply:
            app = check_name("app", request.app)
            if not request.counts:
                raise Rejected("nothing to scale: give TYPE=N")
            release = self.s.current_release(app)
            if release is None:
                raise Rejected(f"app {app!r} has no release yet: run 'ctl deploy PROCFILE' first",
                               grpc.StatusCode.FAILED_PRECONDITION)
            for ptype, n in request.counts.items():
                check_name("process type", ptype)
                if ptype not in release.types:
                    raise Rejected(f"unknown process type {ptype!r} (app {app!r} has: "
                                   f"{', '.join(sorted(release.types))})")
                check_count(ptype, n)
            async with self.s.lock:
                await self.s.store.set_formation(app, dict(request.counts))
                self.s.formation.update({(app, t): n for t, n in request.counts.items()})
                counts = {t: self.s.formation.get((app, t), 0) for t in release.types}
            self.s.poke()
            return pb.ScaleReply(counts=counts)
        return await self._guard(context, run)

    async def GetFormation(self, request: pb.GetFormationRequest, context) -> pb.FormationReply:
        async def run() -> pb.FormationReply:
            app = check_name("app", request.app)
            release = self.s.current_release(app)
            if release is None:
                return pb.FormationReply()
            running = self.s.running_counts()
            return pb.FormationReply(release=release.version, types=[
                pb.TypeCount(type=t, desired=self.s.formation.get((app, t), 0),
                             running=running[(app, t)])
                for t in sorted(release.types)])
        return await self._guard(context, run)

    async def ListInstances(self, request: pb.ListInstancesRequest, context
                            ) -> pb.ListInstancesReply:
        async def run() -> pb.ListInstancesReply:
            if request.app:
                check_name("app", request.app)
            return pb.ListInstancesReply(instances=self.s.instances(request.app))
        return await self._guard(context, run)

    async def ListAgents(self, request: pb.ListAgentsRequest, context) -> pb.ListAgentsReply:
        counts = {name: len(keys) for name, keys in self.s.lists_by_agent().items()}
        return pb.ListAgentsReply(agents=[self._agent(name, counts.get(name, 0))
                                          for name in sorted(self.s.agents.entries)])

    def _agent(self, name: str, instances: int) -> pb.Agent:
        e = self.s.agents.entries[name]
        state = e.state
        if state == AgentState.DRAINING and not instances and not any(map(e.runs, e.reports)):
            state = AgentState.DRAINED
        return pb.Agent(name=name, address=e.record.address, state=state,
                        capacity=e.record.capacity, instances=instances,
                        last_seen=e.last_seen, connected=e.session is not None,
                        metrics_address=e.record.metrics_address)

    async def Drain(self, request: pb.DrainRequest, context) -> pb.DrainReply:
        async def run() -> pb.DrainReply:
            name = check_name("agent", request.agent)
            async with self.s.lock:
                entry = self.s.agents.entries.get(name)
                if entry is None:
                    raise Rejected(f"no agent named {name!r}", grpc.StatusCode.NOT_FOUND)
                record = dataclasses.replace(entry.record,
                                             state="ready" if request.undo else "draining")
                await self.s.store.put_agent(record)
                entry.record = record
            self.s.poke()
            count = len(self.s.lists_by_agent().get(name, []))
            return pb.DrainReply(agent=self._agent(name, count))
        return await self._guard(context, run)
