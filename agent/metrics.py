"""The agent's Prometheus metrics, computed at scrape time from its runners."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from agent.link import SchedulerLink
    from agent.logs import LogSink
    from agent.supervisor import Supervisor


START_SECONDS = Histogram(
    "formation_agent_instance_start_seconds",
    "Seconds from spawn to running (process started) and to healthy (first check passed).",
    ["phase"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))


class AgentCollector:
    def __init__(self, supervisor: "Supervisor", link: "SchedulerLink", sink: "LogSink",
                 capacity: int) -> None:
        self.supervisor, self.link, self.sink, self.capacity = supervisor, link, sink, capacity

    def collect(self) -> Iterator[Metric]:
        runners = list(self.supervisor.runners.values())
        by_state = GaugeMetricFamily("formation_agent_instances",
                                     "Instances on this agent by app, type and state.",
                                     labels=["app", "type", "state"])
        for (app, ptype, state), n in sorted(Counter(
                (r.spec.app, r.spec.type, r.state.value) for r in runners).items()):
            by_state.add_metric([app, ptype, state], n)
        restarts = CounterMetricFamily("formation_agent_instance_restarts",
                                       "Restarts of each instance since it was assigned here.",
                                       labels=["app", "instance"])
        for r in runners:
            restarts.add_metric([r.spec.app, r.spec.id], r.restarts)
        slots = GaugeMetricFamily("formation_agent_slots", "Instance slots.", labels=["kind"])
        slots.add_metric(["used"], len(runners))
        slots.add_metric(["total"], self.capacity)
        connected = GaugeMetricFamily("formation_agent_connected",
                                      "1 while the agent is in contact with a scheduler.")
        connected.add_metric([], 1 if self.link.connected else 0)
        dropped = CounterMetricFamily("formation_agent_log_lines_dropped",
                                      "Instance output lines dropped because stdout lagged.")
        dropped.add_metric([], self.sink.dropped)
        yield from (by_state, restarts, slots, connected, dropped)


def install(collector: AgentCollector) -> None:
    REGISTRY.register(collector)
