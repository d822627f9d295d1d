"""Prometheus HTTP service discovery (the `http_sd_configs` JSON format), served by the
scheduler next to its /metrics:

    /sd/agents     every agent's metrics endpoint, labelled with the agent's name
    /sd/instances  every running instance's $PORT, labelled app, type, instance, agent
                   (so apps that expose /metrics are scraped too)
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.core import Scheduler

from common.states import InstanceState

JSON = "application/json"


def agents(s: "Scheduler") -> tuple[str, bytes]:
    groups = [{"targets": [e.record.metrics_address],
               "labels": {"agent": name, "state": e.state.word}}
              for name, e in sorted(s.agents.entries.items())
              if e.record.metrics_address and not e.down]
    return JSON, json.dumps(groups).encode()


def instances(s: "Scheduler") -> tuple[str, bytes]:
    groups = []
    for inst in s.instances():
        entry = s.agents.entries.get(inst.agent)
        if inst.state != InstanceState.RUNNING or not inst.port or entry is None:
            continue
        groups.append({"targets": [f"{entry.record.address}:{inst.port}"],
                       "labels": {"app": inst.app, "type": inst.type, "instance": inst.id,
                                  "agent": inst.agent}})
    return JSON, json.dumps(groups).encode()
