"""The scheduler's event metrics (counters and histograms), in a leaf module: code that is
measured imports this; the collector of state gauges (metrics.py) reads state at scrape time."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram("formation_reconcile_duration_seconds",
                              "Time of one evaluate-plan-apply-push pass.",
                              buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
PLACEMENTS = Counter("formation_placements_total", "Instances placed or migrated onto an agent.")
STOPS = Counter("formation_stops_total", "Instances removed by scale-down or type removal.")
ETCD_SECONDS = Histogram("formation_etcd_request_duration_seconds",
                         "Latency of etcd requests made by the scheduler.", ["op"],
                         buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1))
APPLY_CONFLICTS = Counter("formation_apply_conflicts_total",
                          "Assignment writes refused because a key changed since it was read.")
IGNORED_REPORTS = Counter("formation_ignored_reports_total",
                          "Instance reports from agents that were invalid or about instances "
                          "not assigned to them.")
RECONCILE_ERRORS = Counter("formation_reconcile_errors_total",
                           "Reconcile passes that failed with an unexpected error (logged).")
DEREGISTER_SECONDS = Histogram(
    "formation_deregister_duration_seconds",
    "From an instance leaving the endpoints to its agent being let stop it: every "
    "acknowledging load balancer applied the change, or deregister_timeout passed.",
    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10))
DEREGISTER_TIMEOUTS = Counter("formation_deregister_timeouts_total",
                              "Deregistrations that ended at deregister_timeout, without "
                              "every acknowledging load balancer's word.")
LEADER = Gauge("formation_scheduler_leader",
               "1 while this scheduler replica leads (its lease is sure to be alive), else 0.")
LEADER_CHANGES = Counter("formation_scheduler_leader_changes_total",
                         "Changes of the leading replica this replica has seen.")
FORWARDED = Counter("formation_scheduler_forwarded_calls_total",
                    "Control calls this replica forwarded to the leader, by method.",
                    ["method"])
FENCED_WRITES = Counter("formation_scheduler_fenced_writes_total",
                        "Writes etcd refused because the leadership they were made under "
                        "was over (a deposed leader's).")
WITHHELD_PUSHES = Counter("formation_scheduler_withheld_pushes_total",
                       "Assignment lists not pushed because this replica could not be sure "
                       "it still led.")
