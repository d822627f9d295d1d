"""`ctl dev [PROCFILE] [--agents N] [--scale TYPE=N,...]`: the whole cluster on this machine.

Starts etcd (temporary data dir), a scheduler and N agents on loopback as its own children,
with mutual TLS between them (a throwaway CA in the temporary dir), deploys the Procfile,
scales it, and streams every log line like foreman. While it runs, `ctl` in another terminal
finds it by itself (ctl/context.py: the scheduler and an operator certificate). Ctrl-C (or
SIGTERM) stops the agents (and so their instances), the scheduler and etcd, and removes the
temporary dir and the context.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time

from common.haproxy import INSTALL_HINT, haproxy_binary
from common.net import is_free
from ctl import context, deploy, scale
from ctl.client import Client
from ctl.devcerts import DevCerts
from ctl.errors import USAGE, CtlError
from ctl.localcluster import ClusterError, Launch, Part, free_port, wait_port

LB = "lb"  # the part's name (its lines in the stream)
PORTS_PER_AGENT = 100
FIRST_APP_PORT = 5000


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dev", parents=[parent], help="run a local cluster with an app",
                       description=__doc__.splitlines()[0])
    p.add_argument("procfile", nargs="?", default="Procfile", metavar="PROCFILE")
    p.add_argument("--agents", type=int, default=2, metavar="N", help="agents to start (2)")
    p.add_argument("--scale", default="", metavar="TYPE=N,...", help="formation to run")
    p.add_argument("--capacity", type=int, default=50, metavar="N", help="slots per agent (50)")
    p.add_argument("--settings", metavar="FILE", help="per-type settings file")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--env-file", metavar="FILE")
    p.add_argument("--lb-listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where formation-lb serves the web type, if haproxy is installed "
                        "(127.0.0.1:8080; another free port if that one is taken)")
    p.set_defaults(run=run, needs_client=False)


def say(text: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} dev | {text}\n")
    sys.stdout.flush()


def listen_address(default_port: int = 7070) -> str:
    """127.0.0.1:7070 (ctl's default) when free, so `ctl ps` works in another terminal."""
    port = default_port if is_free(default_port) else free_port()
    return f"127.0.0.1:{port}"


def start_lb(launch: Launch, scheduler: str, args: argparse.Namespace, certs: DevCerts
             ) -> Part | None:
    """formation-lb in front of the app's web type, when HAProxy is installed: the app at one
    address, as Heroku's router gives it. Without HAProxy, say how to get it."""
    if haproxy_binary() is None:
        say(f"no load balancer: haproxy is not installed ({INSTALL_HINT}); each web instance "
            "answers on its own port (`ctl ps`)")
        return None
    host, _, port = args.lb_listen.rpartition(":")
    if not is_free(int(port)):
        port = str(free_port(host))
    edge = launch.lb(scheduler, f"{host}:{port}", args.app, "web",
                     tls=certs.issue("lb", "dev-lb"), name=LB)
    try:
        wait_port(host, int(port), 20, edge.proc)
    except ClusterError as e:  # the app runs all the same: say so, go on without it
        edge.stop()
        say(f"no load balancer: formation-lb did not start ({e}; its lines are above); each "
            "web instance answers on its own port (`ctl ps`)")
        return None
    say(f"web at http://{host}:{port}/ through formation-lb (HAProxy): "
        f"try `curl {host}:{port}` a few times")
    return edge


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.agents <= 32:
        raise CtlError("--agents must be from 1 to 32", USAGE)
    host, _, port = args.lb_listen.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CtlError(f"--lb-listen must be HOST:PORT, not {args.lb_listen!r}", USAGE)
    request = deploy.build_request(args)  # bad Procfile: fail before starting anything
    counts = scale.resolve(scale.parse_specs([s for s in args.scale.split(",") if s]), {})
    workdir = os.path.dirname(os.path.abspath(args.procfile))

    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    parts: list[Part] = []
    tmp = tempfile.TemporaryDirectory(prefix="formation-dev-")
    # etcd's own chatter goes to a file; the scheduler's and agents' lines are the show.
    # (SIM115: each Part owns its file and closes it on stop().)
    launch = Launch(stdout=lambda name: open(os.path.join(tmp.name, f"{name}.log"), "w")  # noqa: SIM115
                    if name.startswith("etcd") else None)
    try:
        etcd_port, peer_port = free_port(), free_port()
        etcd = launch.etcd(os.path.join(tmp.name, "etcd"), "127.0.0.1", etcd_port, peer_port)
        parts.append(etcd)
        wait_port("127.0.0.1", etcd_port, 20, etcd.proc)
        listen = listen_address()
        certs = DevCerts(os.path.join(tmp.name, "tls"))
        parts.append(launch.scheduler(f"http://127.0.0.1:{etcd_port}", listen,
                                      metrics=f"127.0.0.1:{free_port()}",
                                      tls=certs.issue("scheduler", "scheduler")))
        wait_port("127.0.0.1", int(listen.rsplit(":", 1)[1]), 20, parts[-1].proc)
        for i in range(1, args.agents + 1):
            lo = FIRST_APP_PORT + (i - 1) * PORTS_PER_AGENT
            parts.append(launch.agent(f"agent-{i}", listen, args.capacity,
                                      f"{lo}-{lo + PORTS_PER_AGENT - 1}", workdir,
                                      listen=f"127.0.0.1:{free_port()}", advertise="127.0.0.1",
                                      metrics=f"127.0.0.1:{free_port()}",
                                      tls=certs.issue("agent", f"agent-{i}")))
        operator = certs.issue("operator", "dev")
        client = Client(listen, operator)
        deadline = time.monotonic() + 30
        while sum(a.connected for a in client.agents()) < args.agents:
            if time.monotonic() > deadline:
                raise CtlError("agents did not connect within 30s")
            time.sleep(0.1)
        request.app = args.app
        version = client.deploy(request).version
        if counts:
            client.scale(args.app, counts)
        client.close()
        where = context.write(context.Context(listen, operator.ca, operator.cert, operator.key,
                                              os.getpid()))
        say(f"{args.app} v{version} deployed on {args.agents} agents; scheduler at {listen} "
            "(mutual TLS)")
        if "web" in {t.name for t in request.types}:
            edge = start_lb(launch, listen, args, certs)
            if edge is not None:
                parts.insert(0, edge)  # stopped first
        say(f"ctl in another terminal finds this cluster by itself ({where})")
        say("try `ctl ps`, `ctl scale web=5`; Ctrl-C stops everything")
        while True:
            for part in parts:
                if part.proc.poll() is not None:
                    raise CtlError(f"{part.name} exited with code {part.proc.returncode}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except ClusterError as e:
        raise CtlError(str(e)) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        say("stopping")
        agents = [p for p in parts if p.name.startswith("agent-")]
        for p in parts[:1] if parts and parts[0].name == LB else []:
            p.stop()
        for p in agents:  # all at once, then each waited for
            p.proc.send_signal(signal.SIGTERM)
        for p in agents:
            p.stop(None)
        for p in reversed([p for p in parts if p not in agents]):
            p.stop()
        context.remove(os.getpid())
        tmp.cleanup()
        say("stopped")
    return 0
