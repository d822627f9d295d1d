"""`formation-scheduler` / `python -m scheduler`: flags, each also read from the environment."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import sdnotify, tls
from common.aio import cancel_and_wait
from common.cli import OneLineParser, number
from common.grpcserve import SERVER_OPTIONS, add_service, bind
from common.httpserve import metrics_route, serve
from common.limits import HEARTBEAT
from common.logsetup import setup_logging
from common.net import split_hostport
from scheduler import authz, discovery, etcdclient, metrics
from scheduler.agentlink import AgentLinkService
from scheduler.control import ControlService
from scheduler.election import Election
from scheduler.etcdconn import Connection
from scheduler.forward import Forwarder
from scheduler.leadership import MAX_TTL, MIN_TTL, check_address, check_replica_name
from scheduler.logs import RELEASE_OUTPUT_LINES, AgentChannels, last_lines
from scheduler.peers import Peers
from scheduler.push import LinkTimes
from scheduler.reconciler import Scheduler
from scheduler.replica import Replica
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
    p.add_argument("--name",
                   default=env_default("FORMATION_SCHEDULER_NAME", socket.gethostname()),
                   help="this replica's name, unique among the replicas "
                        "(env FORMATION_SCHEDULER_NAME; default: the host name)")
    p.add_argument("--advertise", default=env_default("FORMATION_SCHEDULER_ADVERTISE", ""),
                   help="HOST:PORT where ctl, agents and the other replicas reach this one "
                        "(env FORMATION_SCHEDULER_ADVERTISE; default: --listen, with the host "
                        "name for a wildcard address)")
    p.add_argument("--leader-ttl", default=env_default("FORMATION_LEADER_TTL", "5"),
                   help=f"seconds of the leader's lease in etcd: a dead leader is replaced "
                        f"within about this long, whole seconds from {MIN_TTL} to {MAX_TTL} "
                        "(env FORMATION_LEADER_TTL)")
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
        host, port = split_hostport(args.listen)
        if not args.advertise:
            wildcard = host in ("0.0.0.0", "::", "")
            args.advertise = f"{socket.gethostname()}:{port}" if wildcard else args.listen
        check_address("--advertise", args.advertise)
        check_replica_name(args.name)
        args.leader_ttl = int(number("--leader-ttl", args.leader_ttl, MIN_TTL, MAX_TTL,
                                     integer=True))
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
    conn = Connection(args.endpoints, auth=args.etcd_auth)
    store = Store(conn, args.prefix)
    try:
        credentials = tls.Credentials(args.tls) if args.tls else None
    except tls.TlsError as e:
        log.error("%s", e)
        await conn.close()
        raise SystemExit(1) from None
    secure = credentials is not None
    if credentials is not None and (credentials.identity is None
                                    or credentials.identity.role != "scheduler"):
        log.error("%s is not a scheduler's certificate (it names %s): issue one with "
                  "`ctl tls issue scheduler NAME`", args.tls.cert, credentials.identity)
        await conn.close()
        raise SystemExit(1)
    channels = AgentChannels(credentials)

    def make(fenced: Store, times: LinkTimes) -> Scheduler:
        """The Scheduler of one term of leadership (replica.py)."""
        s = Scheduler(fenced, times, release_history=args.release_history,
                      forget_after=args.agent_forget_after)

        async def release_output(app: str, instance: str, agent: str) -> None:
            for line in await last_lines(s.agents, channels, app, instance, agent,
                                         RELEASE_OUTPUT_LINES):
                s.events.add(app, "release", f"{instance} | {line.text}")
        s.release_output = release_output
        return s
    election = Election(conn, args.prefix, args.name, args.advertise, args.leader_ttl)
    replica = Replica(store, election, make, LinkTimes(args.agent_ttl, args.fence_after))
    metrics.install(replica, conn)
    peers = Peers(credentials)
    policy = authz.control if secure else None
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_service(ControlService(replica, channels, peers), server, "Control", policy,
                route=Forwarder(replica, peers, policy).route)
    add_service(AgentLinkService(replica, peers, tls=secure), server, "AgentLink",
                authz.agent_link if secure else None)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:  # a taken port fails at once
        bind(server, args.listen, credentials.server_credentials() if credentials else None)
    except OSError as e:
        log.error("%s", e)
        await conn.close()
        raise SystemExit(1) from None
    await server.start()  # followers serve too: they forward to the leader

    async def health_of(ok: bool) -> None:  # SERVING while in contact with etcd
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING if ok
                                  else health_pb2.HealthCheckResponse.NOT_SERVING)
    replica.on_health = health_of
    if args.metrics_listen:
        def sd(view: Callable[[Scheduler], tuple[str, bytes]]) -> Callable[[], tuple[str, bytes]]:
            # a follower knows no agents: an empty list (list every replica's URL)
            return lambda: view(s) if (s := replica.current()) else (discovery.JSON, b"[]")
        await serve(args.metrics_listen, {"/metrics": metrics_route,
                                          "/sd/agents": sd(discovery.agents),
                                          "/sd/instances": sd(discovery.instances)})
    log.info("listening on %s as %s, advertised as %s, with %s (etcd %s, agent ttl %.1fs, "
             "leader ttl %ds)", args.listen, args.name, args.advertise,
             f"mutual TLS as {credentials.identity}" if credentials else "no TLS",
             args.etcd, args.agent_ttl, args.leader_ttl)

    task = asyncio.create_task(replica.run(), name="replica")
    stop = asyncio.Event()
    task.add_done_callback(lambda _: stop.set())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads the TLS files (systemctl reload); without TLS it must not kill us
    loop.add_signal_handler(signal.SIGHUP, lambda: credentials and credentials.reload(force=True))
    # Type=notify: the start is complete once we serve (leading or not) and handle SIGTERM
    sdnotify.ready(f"serving on {args.listen} as {args.name}")
    await stop.wait()
    sdnotify.stopping()
    failed = task.done() and not task.cancelled() and task.exception() is not None
    if failed:
        error = task.exception()
        if not isinstance(error, SystemExit):
            log.error("the replica ended: %r", error)
    log.info("stopping")
    # A term's end writes the events of its last second (replica.py).
    with contextlib.suppress(asyncio.CancelledError, SystemExit):
        await cancel_and_wait(task)
    await replica.stop()  # another replica leads at once
    await server.stop(grace=1)
    await peers.close()
    await conn.close()
    if failed:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("scheduler")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
