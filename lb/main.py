"""`formation-lb` / `python -m lb`: HAProxy balancing to a process type's instances, following
the scheduler's endpoints. Flags, start, and stop.

Exit codes: 0 stopped by SIGTERM or SIGINT (HAProxy stopped softly first), 1 a failure
(HAProxy missing, refusing its configuration or exiting by itself; TLS files unusable; the
scheduler refusing the watch before it gave any set: INVALID_ARGUMENT, PERMISSION_DENIED or
UNAUTHENTICATED, a mistake no retry mends), 2 bad usage. Failures are one line on stderr
(with HAProxy's own lines before it, if it refused to start).
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import NoReturn

from common import tls
from common.cli import OneLineParser, number
from common.haproxy import haproxy_binary, missing
from common.httpserve import metrics_route, serve
from common.logsetup import setup_logging
from common.names import InvalidName, check_name
from common.net import split_hostport
from lb import haproxy
from lb.balancer import Balancer
from lb.follow import Follower, Refused
from lb.haproxy import Haproxy
from lb.runtime import Runtime
from lb.servers import Admin, Checks, check_host
from proto import formation_pb2 as pb

log = logging.getLogger("lb")
MAX_NAME = 255  # the scheduler's bound on a watcher's name
PREFIX = "formation-lb-"  # of its private directory's name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = OneLineParser(prog="formation-lb",
                      description="HAProxy in front of a process type's instances, "
                                  "following the scheduler's endpoints.")
    p.add_argument("--scheduler", default=env("FORMATION_SCHEDULER", "127.0.0.1:7070"),
                   help="scheduler HOST:PORT[,HOST:PORT...] (env FORMATION_SCHEDULER)")
    p.add_argument("--listen", default=env("FORMATION_LB_LISTEN", ""),
                   help="HOST:PORT HAProxy serves HTTP on (env FORMATION_LB_LISTEN)")
    p.add_argument("-a", "--app", default=env("FORMATION_APP", "default"),
                   help="the app (env FORMATION_APP, default `default`)")
    p.add_argument("--type", default="web", help="the process type balanced to (web)")
    p.add_argument("--name", default="",
                   help="who watches, for the scheduler's log (default HOSTNAME:PORT)")
    p.add_argument("--metrics", "--metrics-listen", dest="metrics", default="",
                   help="HOST:PORT serving /metrics (a bare :PORT is loopback; default off)")
    p.add_argument("--check-interval", default="1",
                   help="seconds between HAProxy's health checks of a server (1)")
    p.add_argument("--check-fall", default="2",
                   help="failed checks in a row after which a server gets no requests (2)")
    tls.add_flags(p, daemon=False)
    args = p.parse_args(argv)
    try:
        if not args.listen:
            raise ValueError("--listen HOST:PORT is required")
        host, args.port = split_hostport(args.listen)
        if not 1 <= args.port <= 65535:
            raise ValueError(f"--listen port must be from 1 to 65535, not {args.port}")
        try:
            args.host = check_host(host, listen=True)
        except ValueError as e:
            raise ValueError(f"--listen: {e}") from None
        args.addresses = [a.strip() for a in args.scheduler.split(",") if a.strip()]
        if not args.addresses:
            raise ValueError("--scheduler is empty")
        for a in args.addresses:
            split_hostport(a)
        check_name("app", args.app)
        check_name("process type", args.type)
        args.name = args.name or f"{socket.gethostname()}:{args.port}"
        if len(args.name) > MAX_NAME or not args.name.isprintable():
            raise ValueError(f"--name must be at most {MAX_NAME} printable characters")
        if args.metrics:
            mhost, mport = split_hostport(args.metrics, default_host="127.0.0.1")
            args.metrics = f"{mhost}:{mport}"
        args.checks = Checks(number("--check-interval", args.check_interval, 0.1, 60),
                             int(number("--check-fall", args.check_fall, 1, 100, True)))
        args.tls = tls.paths_from(args)
    except (ValueError, InvalidName) as e:
        p.error(str(e))
    return args


def fail(message: str) -> NoReturn:
    print(f"formation-lb: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def private_dir() -> str:
    """A directory only this user may enter, for HAProxy's configuration and admin socket;
    in /tmp if $TMPDIR's path would make the socket's too long or hold odd characters. It
    holds formation-lb's pid, so a later one can remove it if this one is killed."""
    path = tempfile.mkdtemp(prefix=PREFIX)  # mode 0700
    if len(path) > 80 or not path.replace("/", "").replace("-", "").replace("_", "").isalnum():
        os.rmdir(path)
        path = tempfile.mkdtemp(prefix=PREFIX, dir="/tmp")
    sweep(os.path.dirname(path))
    with open(os.path.join(path, "pid"), "w") as f:
        f.write(str(os.getpid()))
    return path


def sweep(parent: str) -> None:
    """Remove the directories of formation-lb processes that are gone (a SIGKILL leaves its
    directory behind); those of live ones, of other users or being made are left alone."""
    for path in glob.glob(os.path.join(parent, PREFIX + "*")):
        try:
            with open(os.path.join(path, "pid")) as f:
                os.kill(int(f.read()), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):  # alive (PermissionError), not ours, no pid yet
            continue


async def run(args: argparse.Namespace) -> int:
    binary = haproxy_binary()
    if binary is None:
        fail(missing())
    try:
        creds = tls.Credentials(args.tls) if args.tls else None
    except tls.TlsError as e:
        fail(str(e))
    workdir = private_dir()
    try:
        return await serve_with(binary, workdir, creds, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def serve_with(binary: str, workdir: str, creds: tls.Credentials | None,
                     args: argparse.Namespace) -> int:
    stop = asyncio.Event()  # before HAProxy starts, so a SIGTERM at any time stops it softly
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if creds is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: creds.reload(force=True))
    config_path = os.path.join(workdir, "haproxy.cfg")
    runtime = Runtime(os.path.join(workdir, "admin.sock"))
    with open(os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(haproxy.config(args.host, args.port, runtime.path, haproxy.max_conn()))
    # Started before anything makes a thread (gRPC does): a fork with threads is unsafe.
    hx = await Haproxy.start(binary, config_path)
    if not await hx.ready(runtime):
        await hx.stop(grace=0)
        for line in await hx.output():
            print(line, file=sys.stderr)
        fail(f"HAProxy ({binary}) did not start"
             + (f": exit status {hx.proc.returncode}" if hx.proc.returncode is not None
                else f" within {haproxy.READY_TIMEOUT:g}s"))
    log.info("haproxy %s (pid %d) serves %s; watching %s/%s at %s as %s", binary, hx.pid,
             args.listen, args.app, args.type, ",".join(args.addresses), args.name)
    balancer = Balancer(runtime, haproxy.BACKEND, args.checks, args.app, args.type)
    follower = Follower(args.addresses, pb.EndpointsWatch(
        app=args.app, type=args.type, name=args.name, acknowledges=True),
        balancer.apply, balancer.busy, lambda: balancer.count(Admin.ACTIVE), creds)
    if args.metrics:
        try:
            await serve(args.metrics, {"/metrics": metrics_route})
        except OSError as e:
            await hx.stop(grace=0)
            fail(f"cannot serve --metrics {args.metrics}: {e.strerror}")
    following = asyncio.create_task(follower.run())
    tending = asyncio.create_task(balancer.tend())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({following, tending, stopping, hx.exited},
                       return_when=asyncio.FIRST_COMPLETED)
    for task in (following, tending, stopping):
        task.cancel()
    await asyncio.gather(following, tending, stopping, return_exceptions=True)
    if hx.exited.done() and not stop.is_set():  # (a stop to the whole group reaches it too)
        fail(f"HAProxy exited by itself with status {hx.proc.returncode}")
    log.info("stopping HAProxy (requests in flight get up to %gs)", haproxy.SOFT_STOP)
    await hx.stop()
    for task in (following, tending):
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Refused):
            fail(str(error))
        if error is not None:
            log.error("formation-lb failed", exc_info=error)
            return 1
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.name)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
