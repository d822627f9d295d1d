"""`formation-agent` / `python -m agent`: flags, each also read from the environment."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

import grpc

from agent import api, base_environment, cgroups, handover, metrics, simulate, upgrade
from agent.cgroups import Isolation
from agent.launcher import OsLauncher
from agent.link import SchedulerLink
from agent.logs import LogSink
from agent.ports import PortPool, ephemeral_range, parse_range
from agent.supervisor import Supervisor
from common import aio, sdnotify, tls
from common.cli import OneLineParser
from common.httpserve import metrics_route, serve
from common.identity import Identity
from common.logsetup import setup_logging
from common.names import InvalidName, check_name
from common.net import split_hostport
from proto import formation_pb2 as pb

log = logging.getLogger("agent")
MAX_CAPACITY = 100_000   # instance slots (the scheduler's bound too)
MAX_SIMULATED = 10_000   # simulated agents of one process
SHUTDOWN_SLACK = 5.0     # seconds an agent may take to stop beyond its longest stop_timeout


def default_name() -> str:
    """The host name, made into a valid agent name."""
    name = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    return name[:63] or "agent"


def local_address_towards(host: str) -> str:
    """The local IP that routes to host (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def whole_number(flag: str, text: str, most: int) -> int:
    """text as a number from 0 to most, or ValueError naming the flag."""
    text = text.strip()
    if not text.isdigit() or not text.isascii() or int(text) > most:
        raise ValueError(f"{flag} must be a whole number from 0 to {most}, not {text!r}")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = OneLineParser(prog="formation-agent",
                      description="Formation's agent: runs this machine's instances.")
    p.add_argument("--scheduler", default=env("FORMATION_SCHEDULER", "127.0.0.1:7070"),
                   help="scheduler HOST:PORT[,HOST:PORT...] (env FORMATION_SCHEDULER)")
    p.add_argument("--name", default=env("FORMATION_AGENT_NAME", ""),
                   help="agent name, default the host name (env FORMATION_AGENT_NAME)")
    p.add_argument("--capacity", default=env("FORMATION_CAPACITY", "100"),
                   help=f"instance slots, 0-{MAX_CAPACITY} (env FORMATION_CAPACITY)")
    p.add_argument("--advertise", default=env("FORMATION_ADVERTISE", ""),
                   help="address others reach this host at (env FORMATION_ADVERTISE)")
    p.add_argument("--port-range", default=env("FORMATION_PORT_RANGE", "5000-5999"),
                   help="ports for $PORT, A-B (env FORMATION_PORT_RANGE)")
    p.add_argument("--listen", default=env("FORMATION_AGENT_LISTEN", ""),
                   help="gRPC HOST:PORT the scheduler reads logs and health from: "
                        "0.0.0.0:7071 with TLS, 127.0.0.1:7071 without "
                        "(env FORMATION_AGENT_LISTEN)")
    p.add_argument("--metrics-listen", default=env("FORMATION_METRICS_LISTEN", ""),
                   help="HOST:PORT serving /metrics (env FORMATION_METRICS_LISTEN)")
    p.add_argument("--simulate", default="0", metavar="N",
                   help=f"BENCHMARK AID: connect N (up to {MAX_SIMULATED}) simulated agents "
                        "that report every assignment running and spawn nothing")
    p.add_argument("--isolation", default=env("FORMATION_ISOLATION", "auto"),
                   help="how instances are contained: auto (a cgroup v2 each where the agent "
                        "may, else its process group), cgroup, process-group "
                        "(env FORMATION_ISOLATION)")
    p.add_argument("--workdir", default=env("FORMATION_WORKDIR", os.getcwd()),
                   help="directory instances run in (env FORMATION_WORKDIR)")
    tls.add_flags(p)
    args = p.parse_args(argv)
    try:
        args.tls = tls.paths_from(args)
        args.listen = args.listen or ("0.0.0.0:7071" if args.tls else "127.0.0.1:7071")
        split_hostport(args.listen)
        tls.check_listen("--listen", args.listen, args.tls is not None, args.insecure)
        args.name = check_name("agent", args.name or default_name())
        args.capacity = whole_number("--capacity", args.capacity, MAX_CAPACITY)
        args.simulate = whole_number("--simulate", args.simulate, MAX_SIMULATED)
        if args.isolation not in cgroups.MODES:
            raise ValueError(f"--isolation must be one of {', '.join(cgroups.MODES)}, "
                             f"not {args.isolation!r}")
        args.ports = parse_range(args.port_range)
        args.addresses = [a.strip() for a in args.scheduler.split(",") if a.strip()]
        for a in args.addresses:
            split_hostport(a)
        if not args.addresses:
            raise ValueError("--scheduler is empty")
        split_hostport(args.listen)
        if args.metrics_listen:
            split_hostport(args.metrics_listen)
        if not os.path.isdir(args.workdir):
            raise ValueError(f"--workdir {args.workdir!r} is not a directory")
    except (ValueError, InvalidName) as e:
        p.error(str(e))
    if not args.advertise:
        args.advertise = local_address_towards(split_hostport(args.addresses[0])[0])
    return args


def use_pidfd_child_watcher() -> None:
    """Python 3.11's default child watcher runs a thread per child; pidfds need none."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)


def make_hello(args: argparse.Namespace, isolation: cgroups.Isolation) -> pb.Hello:
    return pb.Hello(name=args.name, address=args.advertise, capacity=args.capacity,
                    metrics_address=args.metrics_listen and
                    f"{args.advertise}:{split_hostport(args.metrics_listen)[1]}",
                    api_address=f"{args.advertise}:{split_hostport(args.listen)[1]}",
                    isolation=isolation.mode)


def credentials(args: argparse.Namespace) -> tls.Credentials | None:
    """This agent's TLS material, which must be an agent certificate of its own name; exit 1
    with one line if not."""
    if args.tls is None:
        return None
    try:
        found = tls.Credentials(args.tls)
    except tls.TlsError as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    if found.identity != Identity("agent", args.name):
        log.error("%s names %s, not agent %s: issue one with `ctl tls issue agent %s`",
                  args.tls.cert, found.identity, args.name, args.name)
        raise SystemExit(1)
    return found


async def run(args: argparse.Namespace) -> None:
    if args.simulate:
        await simulate.run_simulated(args.simulate, args.name, args.addresses, args.capacity,
                                     args.advertise, args.tls)
        return
    stop, hup = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    upgrade.unblock()  # what an upgrade held back across its exec comes now, and is handled
    try:
        handed = upgrade.adoptable(handover.take())
    except handover.NotAHandover as e:
        log.warning("%s: ignored", e)
        handed = None
    except handover.HandoverError as e:
        log.error("%s: exiting, so that the guardian of the agent this one replaces ends its "
                  "instances", e)
        raise SystemExit(1) from None
    creds = credentials(args)
    use_pidfd_child_watcher()
    try:
        isolation = (Isolation(**handed["isolation"]) if handed else
                     cgroups.choose(args.isolation, args.name))
    except cgroups.CgroupsUnavailable as e:
        log.error("--isolation cgroup: %s", e)
        raise SystemExit(1) from None
    log.info("%s", isolation.describe())
    launcher = OsLauncher(isolation)
    sink = LogSink()
    supervisor = Supervisor(launcher, sink, PortPool(args.ports), args.workdir,
                            base_environment())
    if handed:
        launcher.adopt(handed["launcher"])
        sink.adopt(handed["sink"])
    else:
        launcher.start_guardian()
    server = await serve_api(args, sink, creds, launcher)
    hello = make_hello(args, isolation)
    link = SchedulerLink(args.addresses, hello, supervisor, launcher.heard_scheduler, creds)
    if handed:
        link.adopt(handed["link"])
        await supervisor.adopt(handed["runners"])
        log.info("upgraded in place: adopted %d instances", len(supervisor.runners))
    metrics.install(metrics.AgentCollector(supervisor, link, sink, args.capacity))
    if args.metrics_listen:
        await serve(args.metrics_listen, {"/metrics": metrics_route})
    log.info("agent %s (capacity %d, %s) -> scheduler %s", args.name, args.capacity,
             args.advertise, ",".join(args.addresses))
    ephemeral = ephemeral_range()
    if args.ports.start < ephemeral.stop and ephemeral.start < args.ports.stop:
        log.warning("--port-range %s overlaps this host's ephemeral ports %d-%d: an outgoing "
                    "connection may take an instance's port", args.port_range, ephemeral.start,
                    ephemeral.stop - 1)
    sinking = asyncio.create_task(sink.run())
    linking = [asyncio.create_task(link.run()), asyncio.create_task(link.fence())]
    sdnotify.ready(f"serving on {args.listen}")
    while not stop.is_set():
        await aio.first(stop.wait(), hup.wait())
        if stop.is_set():
            break
        hup.clear()
        await upgrade.in_place(f"serving on {args.listen}", stop_bound(supervisor), stop,
                               creds, isolation, launcher, sink, link, supervisor)
    sdnotify.stopping()
    log.info("stopping %d instances", len(supervisor.runners))
    for task in linking:  # no new assignments while stopping
        task.cancel()
    await stop_within(supervisor)
    launcher.close_guardian()  # it kills whatever is left, cgroups included
    sinking.cancel()
    await sink.quiet()
    sink.flush()  # what the instances said last
    await server.stop(grace=0.5)
    log.info("stopped")


async def serve_api(args: argparse.Namespace, sink: LogSink, creds: tls.Credentials | None,
                    launcher: OsLauncher) -> grpc.aio.Server:
    """The agent's gRPC API (logs, health), or exit 1 with one line if it cannot listen."""
    try:
        return await api.serve(args.listen, sink, args.name, creds)
    except (OSError, RuntimeError) as e:
        log.error("cannot serve on --listen %s: %s", args.listen, e)
        launcher.close_guardian()
        raise SystemExit(1) from None


def stop_bound(supervisor: Supervisor) -> float:
    """How long stopping every instance may take: the longest stop_timeout + SHUTDOWN_SLACK."""
    return max((r.spec.stop_timeout for r in supervisor.runners.values()),
               default=0.0) + SHUTDOWN_SLACK


async def stop_within(supervisor: Supervisor) -> None:
    """Stop every instance, giving up after stop_bound(): each runner SIGKILLs at its
    stop_timeout and never waits for long after, so this is only the net under that promise
    (an agent stops in bounded time, always)."""
    bound = stop_bound(supervisor)
    try:
        await asyncio.wait_for(supervisor.stop_all(), bound)
    except TimeoutError:
        log.warning("instances still stopping after %.1fs: leaving them to the guardian", bound)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if os.environ.get(upgrade.PREFLIGHT_ENV):  # an upgrade's check of the installed code:
        credentials(args)  # it imports, takes these flags and this certificate, and says
        print("handover", handover.VERSION)  # which handover it adopts
        return
    setup_logging(args.name)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
