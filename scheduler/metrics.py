"""The scheduler's Prometheus metrics. Gauges of state are computed at scrape time from the
scheduler itself (a collector), so they can never drift from what it knows."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterator

from prometheus_client import Counter as PCounter, Histogram, REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from common.states import AgentState

if TYPE_CHECKING:
    from scheduler.core import Scheduler

RECONCILE_SECONDS = Histogram("formation_reconcile_duration_seconds",
                              "Time of one evaluate-plan-apply-push pass.",
                              buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
PLACEMENTS = PCounter("formation_placements_total", "Instances placed or migrated onto an agent.")
STOPS = PCounter("formation_stops_total", "Instances removed by scale-down or type removal.")
ETCD_SECONDS = Histogram("formation_etcd_request_duration_seconds",
                         "Latency of etcd requests made by the scheduler.", ["op"],
                         buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1))


class SchedulerCollector:
    """Desired/running per app and type, agents by state, pending instances, up since."""

    def __init__(self, scheduler: "Scheduler") -> None:
        self.s = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.s
        desired = GaugeMetricFamily("formation_desired_instances",
                                    "Desired instances per app and process type.",
                                    labels=["app", "type"])
        running = GaugeMetricFamily("formation_running_instances",
                                    "Instances reported running per app and process type.",
                                    labels=["app", "type"])
        counts = s.running_counts()
        for (app, ptype), n in sorted(s.desired().items()):
            desired.add_metric([app, ptype], n)
            running.add_metric([app, ptype], counts[(app, ptype)])
        agents = GaugeMetricFamily("formation_agents", "Agents by state.", labels=["state"])
        by_state = Counter(e.state for e in s.agents.entries.values())
        for state in (AgentState.READY, AgentState.DRAINING, AgentState.DOWN):
            agents.add_metric([state.word], by_state[state])
        pending = GaugeMetricFamily("formation_pending_instances",
                                    "Wanted instances that fit on no agent.", labels=["app"])
        for app, n in sorted(Counter(k.app for k in s.pending).items()):
            pending.add_metric([app], n)
        up = GaugeMetricFamily("formation_scheduler_start_time_seconds",
                               "Unix time the scheduler started.")
        up.add_metric([], s.started)
        yield from (desired, running, agents, pending, up)


def install(scheduler: "Scheduler") -> None:
    REGISTRY.register(SchedulerCollector(scheduler))
    scheduler.store.request_seconds = lambda op, secs: ETCD_SECONDS.labels(op).observe(secs)


