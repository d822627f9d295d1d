"""The scheduler's state gauges, computed at scrape time from the scheduler itself (a
collector), so they can never drift from what it knows. Event counters: instruments.py."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from common.states import AgentState
from scheduler import instruments
from scheduler.etcdconn import Connection
from scheduler.reconciler import Scheduler
from scheduler.replica import Replica
from scheduler.world import CRASH_LOOP


class SchedulerCollector:
    """Desired/running/crash-looping per app and type, agents by state, pending instances, up
    since: the leader's view (a follower has none: it exports only its start time)."""

    def __init__(self, scheduler: Scheduler | Replica) -> None:
        self.current = scheduler.current if isinstance(scheduler, Replica) \
            else lambda: scheduler
        self.started = scheduler.started

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("formation_scheduler_start_time_seconds",
                               "Unix time the scheduler started.")
        up.add_metric([], self.started)
        yield up
        s = self.current()
        if s is None:
            return
        desired = GaugeMetricFamily("formation_desired_instances",
                                    "Desired instances per app and process type.",
                                    labels=["app", "type"])
        running = GaugeMetricFamily("formation_running_instances",
                                    "Instances reported running per app and process type.",
                                    labels=["app", "type"])
        looping = GaugeMetricFamily(
            "formation_type_crash_looping",
            f"1 while every instance of the type is down and restarted {CRASH_LOOP} times or "
            "more, on every agent that hosts one (the release is broken, not a host), else 0; "
            "types with desired > 0 of each app's current release.", labels=["app", "type"])
        for (app, ptype), n in sorted(s.world.apps.desired().items()):
            desired.add_metric([app, ptype], n)
            up_now = s.read.running[(app, ptype)]
            running.add_metric([app, ptype], up_now)
            if n > 0:
                # A type with a copy running is not crash-looping (World.crash_looping says
                # so too): only the others pay for its scan of the assignments.
                looping.add_metric([app, ptype],
                                   int(not up_now and s.world.crash_looping(app, ptype)))
        agents = GaugeMetricFamily("formation_agents", "Agents by state.", labels=["state"])
        by_state = Counter(e.state for e in s.agents.entries.values())
        for state in (AgentState.READY, AgentState.DRAINING, AgentState.DOWN):
            agents.add_metric([state.word], by_state[state])
        pending = GaugeMetricFamily("formation_pending_instances",
                                    "Wanted instances that fit on no agent.", labels=["app"])
        for app, n in sorted(Counter(k.app for k in s.world.pending).items()):
            pending.add_metric([app], n)
        ends = s.endpoints
        watchers = GaugeMetricFamily("formation_endpoint_watchers",
                                     "WatchEndpoints streams open (load balancers).",
                                     labels=["acknowledges"])
        for flag in (True, False):
            watchers.add_metric([str(flag).lower()],
                                sum(w.acknowledges == flag for w in ends.watchers.values()))
        held = GaugeMetricFamily("formation_deregistering_instances",
                                 "Copies out of the endpoints that their agent keeps until the "
                                 "load balancers have let go of them.")
        held.add_metric([], len(ends.leaving))
        yield from (desired, running, looping, agents, pending, watchers, held)


def install(replica: Replica, conn: Connection) -> None:
    REGISTRY.register(SchedulerCollector(replica))
    conn.request_seconds = lambda op, secs: instruments.ETCD_SECONDS.labels(op).observe(secs)
