"""Timings of the agent-scheduler link that both sides count on (docs/failure-model.md), and
the bounds of every field of a release that reaches etcd (checked by the scheduler for every
client, and by ctl first for friendlier messages: common/appdef.py)."""
from __future__ import annotations

HEARTBEAT = 1.0          # seconds between an agent's heartbeats
SILENCE_LIMIT = 4.0      # seconds without any message before an agent redials
# Trailing metadata of a follower's refusal of an agent's stream: the leader's address, which
# the agent dials next, at once (scheduler/agentlink.py).
LEADER_KEY = "formation-leader"
AGENT_REDIAL_MAX = 5.0   # an agent's longest redial backoff; a restarted scheduler waits it out

# ---- a release (Deploy): over a bound is INVALID_ARGUMENT, and ctl exit 2 -----------------
MAX_TYPES_PER_RELEASE = 100         # process types in one release (one Procfile)
MAX_COMMAND_BYTES = 8 * 1024        # a command or an exec check's command, UTF-8 bytes
MAX_HEALTH_PATH_BYTES = 1024        # an http check's path: printable ASCII, '/' first, no space
MAX_ENV_VARS = 1000                 # variables in a release's env
MAX_ENV_NAME_BYTES = 255            # one variable's name
MAX_ENV_BYTES = 256 * 1024          # the whole env, names + values in UTF-8 (a 100 KB env fits)
MAX_RELEASE_BYTES = 1024 * 1024     # a release as stored (JSON): etcd refuses requests > 1.5 MiB
MAX_STOP_TIMEOUT = 3600.0           # seconds from SIGTERM to SIGKILL (0 .. this, finite)
MAX_DEREGISTER_TIMEOUT = 300.0      # seconds a stop waits for load balancers (0 .. this)
MIN_HEALTH_INTERVAL = 0.1           # seconds between checks (and a check's smallest timeout)
MAX_HEALTH_SECONDS = 3600.0         # the largest health interval, timeout and grace
MAX_HEALTH_FAILURES = 1000          # failures in a row before a restart (1 .. this; int32 wire)
MAX_DEPLOY_COUNT = 10_000           # a [TYPE.deploy] max_surge/max_unavailable count: no type
#                                     has more instances (names.MAX_INSTANCES_PER_TYPE)
MAX_DEPLOY_SECONDS = 3600.0         # the largest min_healthy_time and healthy_deadline
MAX_RELEASE_TIMEOUT = 86400.0       # the largest [release] timeout (1 .. this seconds)
MAX_LIST_BYTES = 64 * 2**20  # an agent's assignment list, encoded: the link's message limit
