"""The load-balancer section of docs/benchmarks.md (bench/traffic.py's figures)."""
from __future__ import annotations

from bench.fmt import ratio, spread


def rps(s: dict) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f})"


def traffic(tr: dict) -> list[str]:
    if not tr:
        return []
    th = tr["throughput"]
    base = th["haproxy"]["median"]
    out = ["\n## The load-balancer edge: formation-lb\n",
           "| path of a request | requests/s | vs plain HAProxy |\n|---|---|---|",
           f"| through formation-lb (HAProxy it runs, its server added by the runtime API) | "
           f"{rps(th['formation_lb'])} | {ratio(th['formation_lb']['median'], base)} |",
           f"| through a plain HAProxy, the same configuration, a static `server` line | "
           f"{rps(th['haproxy'])} | 1.00× |",
           f"| straight to the instance, no proxy (the floor) | {rps(th['direct'])} | "
           f"{ratio(th['direct']['median'], base)} |",
           "",
           "| `ctl scale web+1` (web=2 → 3) until … | seconds |\n|---|---|",
           f"| `ctl ps` shows the new instance running | {spread(tr['running'])} |",
           f"| the new instance answers its first request through formation-lb | "
           f"{spread(tr['traffic'])} |",
           f"""
`wrk {tr['wrk']}` (keep-alive) on this machine, {tr['rounds']} rounds, the three paths
alternated round after round; median (min–max). The instance is an HAProxy answering 200 from
memory, so the proxy is what is measured; `wrk`, both proxies and the instance share the
machine's cores, so the absolute figures are this machine's. formation-lb adds nothing to a
request's path: HAProxy forwards it; formation-lb only changes HAProxy's servers when the
endpoints change.

The scale-up is timed from the start of a real `ctl scale web+1` process, with a client sending
requests through formation-lb all along (4 threads, kept-alive and new connections):
{tr['requests']:,} requests, {tr['failed_requests']} failed, across the rounds' scale-ups and
scale-downs. The new instance gets its first request through formation-lb as soon as `ctl ps`
shows it running, within what polling `ctl ps` can tell apart: it is published the moment its
health check passes (the web type's TCP check), formation-lb adds it through HAProxy's runtime
API, and round robin sends it the next request. Most of the time is `ctl`'s own start-up and
TLS connection and the instance's start and first check.
"""]
    return out
