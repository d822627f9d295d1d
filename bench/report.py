"""Render bench/results.json as docs/benchmarks.md: a table per scenario, ratios to the floor."""
from __future__ import annotations

import time

FLOOR = "floor (bare asyncio)"


def f(x: float, unit: str = "s") -> str:
    if unit == "ms":
        return f"{x * 1000:.1f} ms"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def spread(s: dict, unit: str = "s") -> str:
    return f"{f(s['median'], unit)} ({f(s['min'], unit)}–{f(s['max'], unit)})"


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}×" if base else "—"


def render(r: dict) -> str:
    n = r["n"]
    out = [f"# Benchmarks\n",
           f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}, {r['machine']['cores']} "
           f"cores, Python {r['machine']['python']}. Every figure: median (min–max) over "
           f"{r['rounds']} rounds, with the ratio to the floor measured in the same run. "
           "\"Running\" means the child is in /proc with its command line (sleep) or has "
           "written its marker file (Python). Raw figures: `bench/results.json`.\n",
           "The floor is a bare asyncio loop that spawns the same children with nothing else "
           "(pidfd child watcher). supervisord runs with `startsecs=0`; circus at its default "
           "`check_delay` and at 0.1 s. Formation is measured from the `Scale` API call.\n"]
    for kind, title in (("sleep", "`sleep 100000`"), ("python", "a trivial Python program")):
        rows = r["processes"].get(kind, {})
        if not rows:
            continue
        base_up = rows.get(FLOOR, {}).get("start", {}).get("median")
        base_down = rows.get(FLOOR, {}).get("stop", {}).get("median")
        out.append(f"\n## 0 → {n} instances of {title} running, then scale to 0\n")
        out.append("| manager | 0 → running | vs floor | stop all | vs floor |\n|---|---|---|---|---|")
        for name, x in rows.items():
            out.append(f"| {name} | {spread(x['start'])} | {ratio(x['start']['median'], base_up)}"
                       f" | {spread(x['stop'])} | {ratio(x['stop']['median'], base_down)} |")
        one = rows.get("Formation (1 agent)", {}).get("start", {}).get("median")
        four = rows.get("Formation (4 agents)", {}).get("start", {}).get("median")
        if one and four:
            out.append(f"\n4 agents on loopback vs 1 agent: {four / one:.2f}×.")
    sleep = r["processes"].get("sleep", {})
    if any("restart" in x for x in sleep.values()):
        base = sleep.get(FLOOR, {}).get("restart", {})
        out.append("\n## kill -9 of a child → its replacement running\n")
        out.append("| manager | p50 | p95 | p50 vs floor | kills |\n|---|---|---|---|---|")
        for name, x in sleep.items():
            if "restart" in x:
                rr = x["restart"]
                out.append(f"| {name} | {f(rr['p50'], 'ms')} | {f(rr['p95'], 'ms')} | "
                           f"{ratio(rr['p50'], base.get('p50'))} | {len(rr['all'])} |")
        out.append(f"\n## Footprint with {n} `sleep` instances\n")
        out.append("| manager | resident memory | empty | per instance | CPU while idle |\n"
                   "|---|---|---|---|---|")
        for name, x in sleep.items():
            fp = x.get("footprint")
            if fp:
                cpu = ", ".join(f"{k} {v:.2f} %" for k, v in fp["idle_cpu_percent"].items())
                out.append(f"| {name} | {fp['rss_mib']:.1f} MiB | {fp['rss0_mib']:.1f} MiB | "
                           f"{fp['per_instance_kib']:.0f} KiB | {cpu} |")
        rt = sleep.get("Formation (1 agent)", {}).get("api_round_trip")
        if rt:
            out.append(f"\n## `ctl scale c=+1` → running, through the API\n\n"
                       f"p50 {f(rt['p50'], 'ms')}, p99 {f(rt['p99'], 'ms')} over "
                       f"{len(rt['all'])} rounds.")
    cp = r.get("control_plane")
    if cp:
        pl, sim = cp["placement"], cp["simulated"]
        out.append("\n## The control plane at scale\n")
        out.append("| scenario | figure |\n|---|---|")
        out.append(f"| placement, 100,000 instances of 10 types on 1,000 agents | "
                   f"{f(pl['fresh_100k_seconds'])} ({pl['per_1000_fresh_ms']:.1f} ms per 1,000) |")
        out.append(f"| placement, +10 % on top of that | {f(pl['change_10pct_seconds'])} "
                   f"({pl['per_1000_change_ms']:.1f} ms per 1,000 new) |")
        out.append(f"| {sim['agents']} simulated agents, scale 0 → {sim['instances']:,} "
                   f"reported running | {f(sim['seconds_to_running'])}: "
                   f"{sim['placements_per_second']:,.0f} placements/s |")
        out.append(f"| … and back to 0 | {f(sim['seconds_to_zero'])} |")
        out.append(f"| scheduler CPU for the scale-up | {sim['scheduler_cpu_seconds']:.2f} s |")
        out.append(f"| scheduler peak resident memory | {sim['scheduler_peak_rss_mib']:.0f} MiB |")
        out.append(f"| etcd requests for the scale-up | {sim['etcd_requests']:.0f} |")
    fo = r.get("failover")
    if fo:
        out.append("\n## Lost agent (kill -9) → all its instances running elsewhere\n")
        out.append("| agent_ttl | median | worst | runs |\n|---|---|---|---|")
        for x in fo:
            out.append(f"| {x['ttl']:g} s | {f(x['replace']['median'])} | "
                       f"{f(x['replace']['worst'])} | {x['runs']} |")
    out.append("")
    return "\n".join(out) + "\n" + r.get("notes", "")
