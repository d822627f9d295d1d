"""Prometheus HTTP service discovery (the `http_sd_configs` JSON format), served by the
scheduler next to its /metrics:

    /sd/agents     every agent's metrics endpoint, labelled with the agent's name
    /sd/instances  every running instance's $PORT, labelled app, type, instance, agent
                   (so apps that expose /metrics are scraped too)
"""
from __future__ import annotations

import json

from scheduler.reconciler import Scheduler

JSON = "application/json"


def agents(s: Scheduler) -> tuple[str, bytes]:
    groups = [{"targets": [e.record.metrics_address],
               "labels": {"agent": name, "state": e.state.word}}
              for name, e in sorted(s.agents.entries.items())
              if e.record.metrics_address and not e.down]
    return JSON, json.dumps(groups).encode()


def instances(s: Scheduler) -> tuple[str, bytes]:
    """Running instances: those the read models count as running (world.runs_assigned)."""
    groups = []
    for key in sorted(s.read.running_keys()):
        where = s.world.assignments[key]
        entry = s.agents.entries[where.agent]
        report = entry.reports[key]
        if not report.port:
            continue
        groups.append({"targets": [f"{entry.record.address}:{report.port}"],
                       "labels": {"app": key.app, "type": key.type, "instance": key.id,
                                  "agent": where.agent}})
    return JSON, json.dumps(groups).encode()
