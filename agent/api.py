"""The agent's own gRPC server, called by the scheduler: instance logs (AgentApi) and the
standard gRPC health service.

A follower (`Logs` with follow) gets its own queue, bounded in lines and bytes (agent/logs.py:
FOLLOWER_LINES, FOLLOWER_BYTES); lines that do not fit while it reads too slowly are dropped,
and the next line it gets says how many (`LogLine.missed`). It is not cut off."""
from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.logs import LogLine, LogSink, Match
from common.grpcserve import SERVER_OPTIONS, add_service, bind
from common.identity import NO_ROLE, Identity
from common.tls import Credentials
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg

MAX_TAIL = 100_000  # most lines of history a request may ask for; more: INVALID_ARGUMENT


def matcher(request: pb.LogsRequest) -> Match:
    """Lines of the app, of one type (`web`) or one instance (`web.3`) if a selector is given."""
    app, sel = request.app, request.selector
    if not sel:
        return lambda e: not app or e.app == app
    if "." in sel:
        return lambda e: (not app or e.app == app) and e.instance == sel
    prefix = sel + "."
    return lambda e: (not app or e.app == app) and e.instance.startswith(prefix)


def to_pb(e: LogLine, agent: str, missed: int = 0) -> pb.LogLine:
    return pb.LogLine(time=e.time, app=e.app, instance=e.instance, text=e.text, agent=agent,
                      missed=missed)


class AgentApiService(pbg.AgentApiServicer):
    def __init__(self, sink: LogSink, name: str) -> None:
        self.sink = sink
        self.name = name

    async def Logs(self, request: pb.LogsRequest, context) -> AsyncIterator[pb.LogLine]:
        if not 0 <= request.tail <= MAX_TAIL:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"tail must be 0 to {MAX_TAIL}")
        match = matcher(request)
        # Subscribe before reading history, so no line falls between the two.
        follower = self.sink.follow(match) if request.follow else None
        try:
            for e in self.sink.history(match, request.tail):
                yield to_pb(e, self.name)
            if follower is None:
                return
            while True:  # until the caller goes away (the call is cancelled)
                missed, e = await follower.get()
                yield to_pb(e, self.name, missed)
        finally:
            if follower is not None:
                self.sink.unfollow(follower)


def only_the_scheduler(method: str, who: Identity | None) -> str | None:
    """With TLS, only a scheduler's certificate may read this agent's logs."""
    if who is not None and who.role == "scheduler":
        return None
    return f"{who.role} may not read an agent's logs" if who else NO_ROLE


async def serve(listen: str, sink: LogSink, name: str, tls: Credentials | None = None
                ) -> grpc.aio.Server:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_service(AgentApiService(sink, name), server, "AgentApi",
                only_the_scheduler if tls else None)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind(server, listen, tls.server_credentials() if tls else None)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


