"""The agent's own Prometheus instruments, updated as things happen. A leaf: it imports nothing
of the agent, so the runner and the scrape-time collector (agent/metrics.py) both may use it."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

START_SECONDS = Histogram(
    "formation_agent_instance_start_seconds",
    "Seconds from spawn to running (process started) and to healthy (first check passed).",
    ["phase"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
STALE_LISTS = Counter("formation_agent_stale_lists_total",
                      "Assignment lists ignored: a newer leader's list had come first.")
