"""`--wait` for what makes a release (deploy, config set/unset, rollback): progress per type,
then exit 0 once its rollout finished (every instance runs the new release, proven healthy);
1 if the rollout failed (saying whether it was reverted), was superseded, or on timeout."""
from __future__ import annotations

import argparse
import sys

from common.states import InstanceState
from ctl.client import Client
from ctl.errors import RUNTIME, CtlError
from ctl.progress import check_timeout, watch
from proto import formation_pb2 as pb

PHASE = "release phase"  # how ctl releases' reason starts while, or because, it ran


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="wait until every instance runs the new release, healthy")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds --wait waits (default 120)")


def progress(instances: list[pb.Instance], desired: dict[str, int], version: int
             ) -> tuple[bool, str]:
    """(done?, `web 3/10 updated, 2 healthy; worker 2/2 updated, 2 healthy`)."""
    done, parts = True, []
    for ptype, want in sorted(desired.items()):
        rows = [i for i in instances if i.type == ptype]
        updated = [i for i in rows if i.release == version]
        healthy = sum(1 for i in updated if i.state == InstanceState.RUNNING)
        done = done and len(rows) == want and healthy == want
        parts.append(f"{ptype} {len(updated)}/{want} updated, {healthy} healthy")
    return done, "; ".join(parts) or "no instances"


def outcome(releases: list[pb.ReleaseInfo], version: int) -> str | None:
    """The rollout of `version`: "" if it finished, None while it goes on; else CtlError."""
    info = next((r for r in releases if r.version == version), None)
    if info is None:
        raise CtlError(f"v{version} is no longer kept", RUNTIME)
    why = f": {info.reason}" if info.reason else ""
    if info.status == "reverted":
        current = next((r.version for r in releases if r.status in ("current", "rolling out")),
                       0)
        back = f"; reverted to v{current}" if current else "; reverted"
        raise CtlError(f"v{version} rollout failed{why}{back}", RUNTIME)
    if info.status == "failed" and info.reason.startswith(PHASE):
        raise CtlError(f"v{version} failed{why}; nothing was rolled out", RUNTIME)
    if info.status == "failed":
        raise CtlError(f"v{version} rollout failed{why} (not reverted)", RUNTIME)
    if info.status == "superseded":
        raise CtlError(f"v{version} was superseded by a newer release before it rolled out",
                       RUNTIME)
    return "" if info.status == "current" else None


def wait(client: Client, args: argparse.Namespace, version: int) -> None:
    """Wait for release `version` of args.app (args.timeout); CtlError (exit 1) if its rollout
    failed or on timeout."""
    check_timeout(args.timeout)
    desired = {t.type: t.desired for t in client.formation(args.app).types if t.desired}

    def check() -> tuple[bool, str]:
        releases = client.releases(args.app)
        finished = outcome(releases, version) == ""
        info = next(r for r in releases if r.version == version)  # outcome() found it
        if info.reason.startswith(PHASE):  # nothing of it runs yet
            return False, info.reason
        done, line = progress(client.instances(args.app), desired, version)
        return finished and done, line
    done, line = watch(check, args.timeout, sys.stderr.isatty() and not args.json)
    if not done:
        raise CtlError(f"timed out after {args.timeout:g}s waiting for v{version}: {line}",
                       RUNTIME)
