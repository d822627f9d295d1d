"""The rolling-deploy section of docs/benchmarks.md (bench/rollout.py's figures)."""
from __future__ import annotations

from bench.fmt import f, ratio, spread

ROWS = (
    ("rolling", "rolling, the defaults: max_surge 25 % (3), max_unavailable 0, "
                "min_healthy_time 2"),
    ("all_at_once", "all at once: max_surge 0, max_unavailable \"100%\", min_healthy_time 2"),
    ("rolling_fast", "rolling, min_healthy_time 0.5"),
    ("all_at_once_fast", "all at once, min_healthy_time 0.5"),
    ("release_phase", "rolling, min_healthy_time 0.5, with a release phase (`release: true`) "
                      "run first"),
)
BASELINE = {"rolling": "all_at_once", "rolling_fast": "all_at_once_fast",
            "release_phase": "rolling_fast"}


def rollout(ro: dict) -> list[str]:
    if not ro:
        return []
    web = ro["web"]
    out = [f"\n## Deploy of web={web} (a web that boots in 0.5 s) while it serves: rolling and "
           "all at once\n",
           f"| deploy | `ctl deploy --wait` | vs its baseline | most serving | fewest serving | "
           f"fewer than {web} serving for |\n|---|---|---|---|---|---|"]
    for name, label in ROWS:
        x = ro.get(name)
        if not x:
            continue
        base = ro.get(BASELINE.get(name, name), {}).get("seconds", {}).get("median")
        out.append(f"| {label} | {spread(x['seconds'])} | {ratio(x['seconds']['median'], base)}"
                   f" | {x['most']['max']:.0f} | {x['fewest']['min']:.0f} | "
                   f"{f(x['below_seconds']['max'])} |")
    rv = ro.get("revert")
    if rv:
        out.append(f"| a release whose web exits at once, the defaults: failed by the "
                   f"crash-loop breaker, reverted (`--wait` answers exit 1) | "
                   f"{spread(rv['seconds'])} | — | {rv['most']['max']:.0f} | "
                   f"{rv['fewest']['min']:.0f} | {f(rv['below_seconds']['max'])} |")
        out.append(f"| … every web back on the good release, running | "
                   f"{spread(rv['back_seconds'])} | | | | |")
    out.append(f"""
{ro['agents']} agents, mutual TLS, {ro['rounds']} rounds of each, their order rotated from round to
round: median (min–max) of `ctl deploy --wait` timed around a real `ctl` process (its start-up
and TLS connection, about 0.6 s, included); most serving is the highest of all rounds, fewest
serving the lowest, and "fewer than {web} serving for" the longest (from the first sample
below {web} to the last). Serving means answering `GET /healthz` with 200 within 0.5 s, every copy
probed every 20 ms, old copies too until they stop answering (tests/cluster/serving.py). Each
deploy is the same code again (a new release, every copy replaced); the web has an http health
check every 0.2 s.

All at once is what a deploy did before rollouts: every copy stopped, then started; its row is
the baseline of the rolling one with the same `min_healthy_time`, which `--wait` waits out in
both (a release is current once each new copy has been healthy that long). A rolling deploy
replaces 3 copies at a time (the surge), in 4 waves (3, 3, 3, 1): each wave's copies boot and
pass a check (about 1.1 s here), are healthy for `min_healthy_time`, and then a pass (every
0.2 s while a rollout waits on time) retires their old copies and starts the next wave. The
waves are what it costs; what it buys is that never fewer than {web} copies serve, where all
at once has fewer, down to none, for seconds. A release that cannot boot costs nothing: its
new copies crash before any is healthy, the crash-loop breaker fails the rollout at once, and
the old copies, never stopped, keep serving. The release phase row's baseline is the rolling
deploy with the same `min_healthy_time`: the difference is one one-shot run on one agent
(assigned, started, reported, its outcome written to etcd) before the first new copy starts.""")
    return out
