"""The agent's Prometheus metrics, computed at scrape time from its runners (the histogram
updated as instances start lives in agent/instruments.py)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent import instruments  # noqa: F401 - its histogram is served beside these
from agent.logs import FOLLOWER, RATE, STDOUT
from agent.procstat import cgroup_usage, group_usage

if TYPE_CHECKING:
    from agent.link import SchedulerLink
    from agent.logs import LogSink
    from agent.supervisor import Supervisor


class AgentCollector:
    """Reads the runners' state at each scrape; keeps none of its own."""

    def __init__(self, supervisor: Supervisor, link: SchedulerLink, sink: LogSink,
                 capacity: int) -> None:
        self.supervisor, self.link, self.sink, self.capacity = supervisor, link, sink, capacity

    def collect(self) -> Iterator[Metric]:
        runners = list(self.supervisor.runners.values())
        by_state = GaugeMetricFamily("formation_agent_instances",
                                     "Instances on this agent by app, type and state "
                                     "(each copy of an id counts).",
                                     labels=["app", "type", "state"])
        states = Counter((r.spec.app, r.spec.type, r.state.word)
                         for r in (*runners, *self.supervisor.leaving))
        for (app, ptype, state), n in sorted(states.items()):
            by_state.add_metric([app, ptype, state], n)
        # Not "instance": Prometheus gives that to targets. "release" and "generation": during a
        # rolling deploy, or a `ctl restart` (same release, next generation), two copies of one
        # id run here, and each must be a series of its own.
        labels = ["app", "type", "id", "release", "generation"]
        restarts = CounterMetricFamily("formation_agent_instance_restarts",
                                       "Restarts of each instance since it was assigned here.",
                                       labels=labels)
        exits = CounterMetricFamily("formation_agent_instance_exits",
                                    "Exits of each instance's process (crashes and restarts).",
                                    labels=labels)
        failures = CounterMetricFamily("formation_agent_health_check_failures",
                                       "Failed health checks of each instance.", labels=labels)
        cpu = CounterMetricFamily("formation_agent_instance_cpu_seconds",
                                  "CPU time of each instance's cgroup, or of the live members "
                                  "of its process group.",
                                  labels=labels)
        rss = GaugeMetricFamily("formation_agent_instance_resident_memory_bytes",
                                "Resident memory of each instance's cgroup or process group.",
                                labels=labels)
        launcher = self.supervisor.launcher
        usage: dict[int, tuple[float, int]] = {}
        by_group: set[int] = set()
        for r in runners:
            cgroup = launcher.cgroup_of(r.pid) if r.pid else None
            if cgroup is not None:
                found = cgroup_usage(cgroup)
                if found is not None:
                    usage[r.pid] = found
            elif r.pid:
                by_group.add(r.pid)
        usage.update(group_usage(by_group))
        for r in runners:
            key = [r.spec.app, r.spec.type, r.spec.id, str(r.spec.release),
                   str(r.spec.generation)]
            restarts.add_metric(key, r.restarts)
            exits.add_metric(key, r.machine.exits)
            failures.add_metric(key, r.machine.health_failures)
            if r.pid in usage:
                cpu.add_metric(key, usage[r.pid][0])
                rss.add_metric(key, usage[r.pid][1])
        slots = GaugeMetricFamily("formation_agent_slots",
                                  "Instance slots (each copy of an id takes one).",
                                  labels=["kind"])
        slots.add_metric(["used"], len(runners))
        slots.add_metric(["total"], self.capacity)
        connected = GaugeMetricFamily("formation_agent_connected",
                                      "1 while the agent is in contact with a scheduler.")
        connected.add_metric([], 1 if self.link.connected else 0)
        dropped = CounterMetricFamily("formation_agent_log_lines_dropped",
                                      "Instance output lines dropped, by reason.",
                                      labels=["reason"])
        dropped_bytes = CounterMetricFamily("formation_agent_log_bytes_dropped",
                                            "Instance output bytes dropped, by reason.",
                                            labels=["reason"])
        for reason in (RATE, STDOUT, FOLLOWER):
            dropped.add_metric([reason], self.sink.dropped_lines[reason])
            dropped_bytes.add_metric([reason], self.sink.dropped_bytes[reason])
        kept = GaugeMetricFamily("formation_agent_log_buffers",
                                 "Instances whose last lines the agent keeps (for ctl logs), "
                                 "by kind: running instances, or ended release phases.",
                                 labels=["kind"])
        ended = len(self.sink.retired)
        kept.add_metric(["instance"], len(self.sink.buffers) - ended)
        kept.add_metric(["release_phase"], ended)
        yield from (by_state, restarts, exits, failures, cpu, rss, slots, connected, dropped,
                    dropped_bytes, kept)


def install(collector: AgentCollector) -> None:
    REGISTRY.register(collector)
