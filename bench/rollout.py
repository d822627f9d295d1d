"""A rolling deploy of web=10, measured on a real cluster (2 agents, mutual TLS) as a load
balancer sees it: tests/cluster/serving.py probes every copy every 20 ms (GET /healthz).

The web is tests/test_serving.py's slow-booting HTTP server (0.5 s before it listens), with an
http health check every 0.2 s. Each round deploys the same code again (a new release, every
copy replaced) with each of:
  - rolling, the default [web.deploy] (max_surge 25 % = 3, max_unavailable 0,
    min_healthy_time 2), and the same with min_healthy_time 0.5;
  - all at once (max_surge 0, max_unavailable "100%": every copy stopped, then started, what a
    deploy did before rollouts), with min_healthy_time 2 and 0.5: the baseline of the rolling
    deploy with the same min_healthy_time;
and, with the defaults, a release whose web exits at once: its rollout fails by the crash-loop
breaker and is reverted by itself; and with min_healthy_time 0.5 and a release phase that
does nothing (`release: true`): what the release phase adds, run once on one agent before
the rollout (its baseline: rolling with min_healthy_time 0.5).

Measured for each: the seconds of `ctl deploy --wait` (a real ctl process, as an operator
runs it), the most and fewest copies serving at once while it ran, and how long fewer than 10
served. The variants' order rotates from round to round, so a busy machine slows each alike.

Just this: `python -m bench.rollout` (about two minutes), or `python -m bench.run --only
rollout`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common.states import InstanceState
from tests.cluster import Cluster, wait_for
from tests.cluster.serving import PERIOD, Serving
from tests.test_serving import SLOW_WEB

APP = "default"
WEB = 10
HEALTH = """\
[web.health]
type = "http"
path = "/healthz"
interval = 0.2
grace = 3
"""
ALL_AT_ONCE = 'max_surge = 0\nmax_unavailable = "100%"\n'
# name -> the [web.deploy] table of its formation.toml ("": none, the defaults)
VARIANTS = {
    "rolling": "",
    "all_at_once": ALL_AT_ONCE,
    "rolling_fast": "min_healthy_time = 0.5\n",
    "all_at_once_fast": ALL_AT_ONCE + "min_healthy_time = 0.5\n",
}
# name -> the Procfile's release phase, if it has one
RELEASE = {"release_phase": ("release: true\n", "min_healthy_time = 0.5\n")}
BASELINE = {"rolling": "all_at_once", "rolling_fast": "all_at_once_fast",
            "release_phase": "rolling_fast"}
GOOD = "web: python3 slowweb.py\n"
BROKEN = "web: sh -c 'echo broken; exit 3'\n"


def write_app(d: Path, procfile: str, deploy: str) -> None:
    (d / "Procfile").write_text(procfile)
    (d / "formation.toml").write_text(HEALTH + (f"\n[web.deploy]\n{deploy}" if deploy else ""))


def settled(c: Cluster) -> bool:
    """No rollout under way, and every web runs the current release."""
    releases = c.client.releases(APP)
    if any(r.status == "rolling out" for r in releases):
        return False
    current = next((r.version for r in releases if r.status == "current"), None)
    ps = c.instances()
    return len(ps) == WEB and all(i.release == current and i.state == InstanceState.RUNNING
                                  for i in ps.values())


def deploy(c: Cluster, d: Path, expect_failure: bool = False) -> dict:
    """`ctl deploy --wait` of d/Procfile, watched by the serving oracle: its seconds, the
    most and fewest copies serving, and for how long fewer than WEB served."""
    wait_for(lambda: settled(c), 60, interval=0.1, what="every web on the current release")
    with Serving(c, floor=WEB) as serving:
        wait_for(lambda: serving.samples > 5 and serving.fewest == WEB, 20,
                 what="every copy serving before the deploy")
        before = len(serving.drops)
        started = time.monotonic()
        result = c.ctl("deploy", str(d / "Procfile"), "--wait", "--timeout", "120",
                       check=False, timeout=150)
        took = time.monotonic() - started
        back = None
        if expect_failure:
            wait_for(lambda: settled(c), 60, interval=0.02, what="every web back, running")
            back = time.monotonic() - started
    drops = serving.drops[before:]
    if expect_failure:
        assert result.returncode == 1 and "reverted to v" in result.stderr \
            and "crash-loop breaker" in result.stderr, result
    elif result.returncode != 0:
        raise AssertionError(f"ctl deploy --wait exited {result.returncode}: {result.stderr}")
    out = {"seconds": took, "most": serving.most, "fewest": serving.fewest,
           "below_seconds": drops[-1][0] - drops[0][0] + PERIOD if drops else 0.0,
           "samples": serving.samples}
    if back is not None:
        out["back_seconds"] = back
    return out


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "all": values}


def run(tmp: Path, rounds: int = 3) -> dict:
    print(f"[rollout] web={WEB}, rolling and all at once, {rounds} rounds ...", file=sys.stderr,
          flush=True)
    d = tmp / "rollout"
    d.mkdir(exist_ok=True)
    (d / "slowweb.py").write_text(SLOW_WEB)
    write_app(d, GOOD, "")
    seen: dict[str, list[dict]] = {name: [] for name in [*VARIANTS, *RELEASE, "revert"]}
    with Cluster(agents=2, mode="local", workdir=str(d)) as c:
        c.ctl("deploy", str(d / "Procfile"))
        c.ctl("scale", f"web={WEB}", "--wait", "--timeout", "60")
        order = [*VARIANTS, *RELEASE, "revert"]
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                if name == "revert":
                    write_app(d, BROKEN, "")
                    x = deploy(c, d, expect_failure=True)
                    write_app(d, GOOD, "")
                elif name in RELEASE:
                    write_app(d, GOOD + RELEASE[name][0], RELEASE[name][1])
                    x = deploy(c, d)
                else:
                    write_app(d, GOOD, VARIANTS[name])
                    x = deploy(c, d)
                seen[name].append(x)
                print(f"  round {r + 1} {name}: {x['seconds']:.2f} s, serving "
                      f"{x['fewest']}-{x['most']}, below {WEB} for {x['below_seconds']:.2f} s",
                      file=sys.stderr, flush=True)
    out: dict = {"web": WEB, "agents": 2, "rounds": rounds}
    for name, xs in seen.items():
        out[name] = {key: summary([x[key] for x in xs])
                     for key in ("seconds", "most", "fewest", "below_seconds",
                                 *(("back_seconds",) if name == "revert" else ()))}
    return out


def main() -> None:
    """Just this part: prints its section of docs/benchmarks.md and the targets it meets."""
    p = argparse.ArgumentParser(prog="python -m bench.rollout", description=main.__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the figures there")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="formation-bench-"))
    try:
        r = {"rollout": run(tmp, args.rounds)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    from bench import report
    print("\n".join(report.rollout(r["rollout"]) + report.targets(r)))


if __name__ == "__main__":
    main()
