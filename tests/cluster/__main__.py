"""`python -m tests.cluster up --hosts 4`: a multi-host cluster to poke at by hand.

Starts etcd, the scheduler and one agent per host (network namespaces where possible), prints
how to reach it with ctl, then reads fault commands from stdin until `quit`, EOF or Ctrl-C:

    kill HOST | restart HOST | freeze HOST | thaw HOST | cut HOST | heal HOST
    restart-scheduler | restart-etcd [N] | kill-etcd N | start-etcd N | truth | help | quit
"""
from __future__ import annotations

import argparse
import signal
import sys

from tests.cluster.harness import EXAMPLES, Cluster, default_mode


def command(c: Cluster, line: str) -> bool:
    """Apply one command; False to quit."""
    words = line.split()
    if not words:
        return True
    op, args = words[0], words[1:]
    one = {"kill": c.kill_agent, "restart": c.restart_agent, "freeze": c.freeze, "thaw": c.thaw,
           "cut": c.cut, "heal": c.heal}
    if op in ("quit", "exit"):
        return False
    if op in one and len(args) == 1:
        one[op](args[0])
    elif op == "restart-scheduler":
        c.restart_scheduler()
    elif op == "restart-etcd":
        c.restart_etcd(int(args[0]) if args else 0)
    elif op == "kill-etcd" and len(args) == 1:
        c.stop_etcd(int(args[0]), signal.SIGKILL)
    elif op == "start-etcd" and len(args) == 1:
        c.start_etcd(int(args[0]))
    elif op == "truth":
        for host, ids in sorted(c.truth().items()):
            print(f"{host}: " + ", ".join(f"{i}({','.join(map(str, p))})"
                                          for i, p in sorted(ids.items())))
    else:
        print(__doc__.split("\n\n", 2)[2].strip())
        return True
    print("ok")
    return True


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster and take fault commands")
    up.add_argument("--hosts", type=int, default=3, help="agent hosts (3)")
    up.add_argument("--mode", default="auto", choices=["auto", "netns", "loopback", "local"])
    up.add_argument("--etcd-members", type=int, default=1)
    up.add_argument("--agent-ttl", type=float, default=10.0)
    up.add_argument("--capacity", type=int, default=50)
    up.add_argument("--no-tls", action="store_true", help="plaintext (--insecure) parts")
    args = p.parse_args()
    mode = default_mode() if args.mode == "auto" else args.mode
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Cluster(agents=args.hosts, mode=mode, etcd_members=args.etcd_members,
                 agent_ttl=args.agent_ttl, capacity=args.capacity, workdir=EXAMPLES,
                 tls=not args.no_tls) as c:
        print(f"mode {mode}: scheduler {c.listen}, etcd {c.etcd_url}")
        for name, host in c.hosts.items():
            print(f"  {name:10} {host.address:16} {host.ns or ''}")
        exports = {"FORMATION_SCHEDULER": c.listen, **c.tls_env()}
        print(" ".join(["export", *(f"{k}={v}" for k, v in exports.items())]))
        print("# then: ctl deploy examples/Procfile")
        print("logs in", c.tmp, "(kept: FTEST_KEEP_LOGS=1)")
        try:
            for line in sys.stdin:
                try:
                    if not command(c, line):
                        break
                except Exception as e:  # noqa: BLE001 - a bad command must not tear down
                    print(f"error: {e}")
            else:
                signal.pause()  # no stdin: run until Ctrl-C
        except KeyboardInterrupt:
            pass
        print("tearing down")


if __name__ == "__main__":
    main()
