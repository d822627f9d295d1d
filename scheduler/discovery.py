"""Prometheus HTTP service discovery (the `http_sd_configs` JSON format), served by the
scheduler next to its /metrics:

    /sd/agents     every agent's metrics endpoint, labelled with the agent's name
    /sd/instances  every running instance's $PORT, labelled app, type, instance, agent,
                   release (so apps that expose /metrics are scraped too); an instance in a
                   rollout's surge has two targets, one per release
"""
from __future__ import annotations

import json

from scheduler.reconciler import Scheduler
from scheduler.world import runs_release

JSON = "application/json"


def agents(s: Scheduler) -> tuple[str, bytes]:
    groups = [{"targets": [e.record.metrics_address],
               "labels": {"agent": name, "state": e.state.word}}
              for name, e in sorted(s.agents.entries.items())
              if e.record.metrics_address and not e.down]
    return JSON, json.dumps(groups).encode()


def instances(s: Scheduler) -> tuple[str, bytes]:
    """Running copies of assigned instances: the assigned one (world.runs_assigned) and,
    during a handoff or a rollout's surge, the old copy while it still serves; each labelled
    with its release."""
    world = s.world
    keys = s.read.running_keys() | {k for k, w in world.assignments.items() if w.previous}
    groups = []
    for key in sorted(keys):
        where = world.assignments.get(key)
        if where is None:
            continue
        copies = [(where.agent, where.copy)]
        if where.previous:
            copies.append((where.previous, where.old_copy))
        for name, (release, generation) in copies:
            entry = s.agents.entries.get(name)
            report = entry.report(key, release, generation) \
                if entry is not None and not entry.down else None
            if entry is None or report is None or not report.port \
                    or not runs_release(report, release):
                continue
            groups.append({"targets": [f"{entry.record.address}:{report.port}"],
                           "labels": {"app": key.app, "type": key.type, "instance": key.id,
                                      "agent": name, "release": str(release)}})
    return JSON, json.dumps(groups).encode()
