"""Timings of the agent-scheduler link that both sides count on (docs/failure-model.md)."""
from __future__ import annotations

HEARTBEAT = 1.0          # seconds between an agent's heartbeats
SILENCE_LIMIT = 4.0      # seconds without any message before an agent redials
AGENT_REDIAL_MAX = 5.0   # an agent's longest redial backoff; a restarted scheduler waits it out
MAX_LIST_BYTES = 64 * 2**20  # an agent's assignment list, encoded: the link's message limit
