"""`formation-scheduler` / `python -m scheduler`: flags, each also read from the environment."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import tls
from common.cli import OneLineParser, number
from common.grpcserve import SERVER_OPTIONS, add_service, bind
from common.httpserve import metrics_route, serve
from common.limits import AGENT_REDIAL_MAX, HEARTBEAT
from common.logsetup import setup_logging
from common.net import split_hostport
from scheduler import authz, discovery, etcdclient, eventstore, metrics
from scheduler.agentlink import AgentLinkService
from scheduler.control import ControlService
from scheduler.logs import RELEASE_OUTPUT_LINES, AgentChannels, last_lines
from scheduler.push import LinkTimes
from scheduler.reconciler import Scheduler
from scheduler.store import Store

log = logging.getLogger("scheduler")


def env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="formation-scheduler",
                      description="Formation's scheduler: keeps the formation running.")
    p.add_argument("--etcd", default=env_default("FORMATION_ETCD", "http://127.0.0.1:2379"),
                   help="etcd URL[,URL...] (env FORMATION_ETCD)")
    p.add_argument("--prefix", default=env_default("FORMATION_ETCD_PREFIX", "/formation"),
                   help="etcd key prefix (env FORMATION_ETCD_PREFIX)")
    etcdclient.add_flags(p)
    p.add_argument("--listen", default=env_default("FORMATION_LISTEN", ""),
                   help="gRPC HOST:PORT for ctl and agents: 0.0.0.0:7070 with TLS, "
                        "127.0.0.1:7070 without (env FORMATION_LISTEN)")
    p.add_argument("--metrics-listen", default=env_default("FORMATION_METRICS_LISTEN", ""),
                   help="HOST:PORT serving /metrics (env FORMATION_METRICS_LISTEN)")
    p.add_argument("--agent-ttl", default=env_default("FORMATION_AGENT_TTL", "10"),
                   help="seconds without heartbeat before an agent is down, 2 to 3600 "
                        "(env FORMATION_AGENT_TTL)")
    p.add_argument("--fence-after", default=env_default("FORMATION_FENCE_AFTER", "0"),
                   help="seconds without contact after which agents stop at_most_once "
                        "instances: 0 (60%% of agent-ttl) or from 2 to less than agent-ttl "
                        "(env FORMATION_FENCE_AFTER)")
    p.add_argument("--release-history", default=env_default("FORMATION_RELEASE_HISTORY", "50"),
                   help="releases kept per app, besides any still assigned, 1 to 10000 "
                        "(env FORMATION_RELEASE_HISTORY)")
    p.add_argument("--agent-forget-after",
                   default=env_default("FORMATION_AGENT_FORGET_AFTER", "86400"),
                   help="seconds after which a down agent is forgotten, 1 to 31536000 "
                        "(env FORMATION_AGENT_FORGET_AFTER)")
    tls.add_flags(p)
    args = p.parse_args(argv)
    try:
        args.tls = tls.paths_from(args)
        args.listen = args.listen or ("0.0.0.0:7070" if args.tls else "127.0.0.1:7070")
        tls.check_listen("--listen", args.listen, args.tls is not None, args.insecure)
        args.endpoints, args.etcd_auth = etcdclient.from_args(args)
        split_hostport(args.listen)
        if args.metrics_listen:
            split_hostport(args.metrics_listen)
        args.agent_ttl = number("--agent-ttl", args.agent_ttl, 2, 3600)
        args.fence_after = number("--fence-after", args.fence_after, 0, 3600)
        args.release_history = int(number("--release-history", args.release_history, 1,
                                          10_000, integer=True))
        args.agent_forget_after = number("--agent-forget-after", args.agent_forget_after, 1,
                                         365 * 86400)
    except ValueError as e:
        p.error(str(e))
    if args.fence_after >= args.agent_ttl:
        p.error("--fence-after must be less than --agent-ttl")
    if 0 < args.fence_after < 2 * HEARTBEAT:  # connected agents would fence themselves
        p.error(f"--fence-after must be 0 (60% of the ttl) or at least {2 * HEARTBEAT:g} s, "
                "twice the heartbeat")
    return args


async def run(args: argparse.Namespace) -> None:
    store = Store(args.endpoints, args.prefix, auth=args.etcd_auth)
    scheduler = Scheduler(store, LinkTimes(args.agent_ttl, args.fence_after),
                          release_history=args.release_history,
                          forget_after=args.agent_forget_after)
    metrics.install(scheduler)
    try:
        credentials = tls.Credentials(args.tls) if args.tls else None
    except tls.TlsError as e:
        log.error("%s", e)
        await store.close()
        raise SystemExit(1) from None
    secure = credentials is not None
    if credentials is not None and (credentials.identity is None
                                    or credentials.identity.role != "scheduler"):
        log.error("%s is not a scheduler's certificate (it names %s): issue one with "
                  "`ctl tls issue scheduler NAME`", args.tls.cert, credentials.identity)
        await store.close()
        raise SystemExit(1)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    channels = AgentChannels(credentials)

    async def release_output(app: str, instance: str, agent: str) -> None:
        for line in await last_lines(scheduler.agents, channels, app, instance, agent,
                                     RELEASE_OUTPUT_LINES):
            scheduler.events.add(app, "release", f"{instance} | {line.text}")
    scheduler.release_output = release_output
    add_service(ControlService(scheduler, channels), server, "Control",
                authz.control if secure else None)
    add_service(AgentLinkService(scheduler, tls=secure), server, "AgentLink",
                authz.agent_link if secure else None)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:  # bound before recovery (which waits for etcd), so a taken port fails at once
        bind(server, args.listen, credentials.server_credentials() if credentials else None)
    except OSError as e:
        log.error("%s", e)
        await store.close()
        raise SystemExit(1) from None
    revision = await scheduler.recover()
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # Agents redial with a backoff of up to AGENT_REDIAL_MAX: that long plus a ttl before any
    # counts as down.
    scheduler.agents.grace(args.agent_ttl + AGENT_REDIAL_MAX)
    if args.metrics_listen:
        await serve(args.metrics_listen, {
            "/metrics": metrics_route,
            "/sd/agents": lambda: discovery.agents(scheduler),
            "/sd/instances": lambda: discovery.instances(scheduler)})
    log.info("listening on %s with %s (etcd %s, agent ttl %.1fs)", args.listen,
             f"mutual TLS as {credentials.identity}" if credentials else "no TLS",
             args.etcd, args.agent_ttl)

    tasks = [asyncio.create_task(scheduler.run(), name="reconcile"),
             asyncio.create_task(store.watch_apps(revision, scheduler.app_event,
                                                  scheduler.apps_lost), name="watch"),
             asyncio.create_task(eventstore.keep(store, scheduler.events,
                                                 scheduler.events_written), name="events")]
    stop = asyncio.Event()
    failed: list[asyncio.Task] = []

    def ended(task: asyncio.Task) -> None:  # neither ever returns: if one does, say so, exit 1
        if not task.cancelled():
            failed.append(task)
            stop.set()
    for t in tasks:
        t.add_done_callback(ended)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if credentials is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: credentials.reload(force=True))
    await stop.wait()
    for t in failed:
        log.error("task %s ended: %r", t.get_name(), t.exception())
    log.info("stopping")
    for t in tasks:
        t.cancel()
    await server.stop(grace=1)
    with contextlib.suppress(TimeoutError):  # the events of the last second, if etcd answers
        await asyncio.wait_for(eventstore.flush(store, scheduler.events,
                                                scheduler.events_written), 5)
    await store.close()
    if failed:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("scheduler")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
