"""What goes into an instance's state machine (events) and what comes out (commands).

The machine (agent/machine.py) takes events, with the time they happened, and returns
commands; the runner (agent/runner.py) carries the commands out and feeds back what happened.
Plain frozen dataclasses: tests compare them with ==.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from common.states import InstanceState


class Timer(enum.Enum):
    """The machine's timers; at most one of each is armed at a time."""
    BACKOFF = "backoff"    # until the next start after a crash
    PROBE = "probe"        # until the next health check
    KILL = "kill"          # from SIGTERM to SIGKILL, then from SIGKILL to giving up on it
    DEADLINE = "deadline"  # from a one-shot run's spawn to its timeout


# ---- events: what happened -----------------------------------------------------------------

@dataclass(frozen=True)
class Begin:
    """The previous copy of this instance is gone: this one may start."""


@dataclass(frozen=True)
class InContact:
    """The scheduler has spoken within fence_after (the answer to AwaitContact)."""


@dataclass(frozen=True)
class PortAcquired:
    port: int


@dataclass(frozen=True)
class PortUnavailable:
    why: str


@dataclass(frozen=True)
class Spawned:
    pid: int


@dataclass(frozen=True)
class SpawnFailed:
    error: str


@dataclass(frozen=True)
class Exited:
    """The group leader itself exited; code as asyncio gives it (negative: a signal). pid: which
    leader (0: the current one); a leader given up on may still exit later."""
    code: int
    pid: int = 0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    why: str = ""


@dataclass(frozen=True)
class StopRequested:
    """Stop for good: scale-down, a replaced release, fencing, agent shutdown. timeout None
    means the process type's stop_timeout."""
    timeout: float | None = None


@dataclass(frozen=True)
class TimerFired:
    timer: Timer


Event = (Begin | InContact | PortAcquired | PortUnavailable | Spawned | SpawnFailed | Exited
         | ProbeResult | StopRequested | TimerFired)


# ---- commands: what to do ------------------------------------------------------------------

@dataclass(frozen=True)
class AwaitContact:
    """Feed InContact once the scheduler is known to be in touch (at_most_once only)."""


@dataclass(frozen=True)
class AcquirePort:
    """Take a port from the pool; feed PortAcquired or PortUnavailable."""


@dataclass(frozen=True)
class ReleasePort:
    port: int


@dataclass(frozen=True)
class Spawn:
    """Start the instance's command with $PORT = port; feed Spawned then Exited, or
    SpawnFailed."""
    port: int


@dataclass(frozen=True)
class Signal:
    """Send sig to the whole process group of pid."""
    pid: int
    sig: int


@dataclass(frozen=True)
class ReleaseGroup:
    """The leader pid is dead (or given up on): finish reading its group's output and wait for
    its cgroup to empty (both bounded), then forget it."""
    pid: int


@dataclass(frozen=True)
class StartTimer:
    """Arm timer (replacing it if armed): feed TimerFired(timer) after delay seconds."""
    timer: Timer
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True)
class Probe:
    """Run the health check once; feed ProbeResult."""


@dataclass(frozen=True)
class CancelProbe:
    """The result of a probe under way no longer matters."""


@dataclass(frozen=True)
class Report:
    """The status changed: tell the scheduler what it is as of this command (the machine may
    have moved on by the time it is carried out)."""
    state: InstanceState
    reason: str
    pid: int
    port: int
    restarts: int


@dataclass(frozen=True)
class Observe:
    """A start-time sample for the START_SECONDS histogram (agent/instruments.py)."""
    phase: str
    seconds: float


@dataclass(frozen=True)
class Note:
    """A line for the agent's log."""
    text: str
    warning: bool = False


@dataclass(frozen=True)
class Finished:
    """Stopped for good: nothing more will happen."""


Command = (AwaitContact | AcquirePort | ReleasePort | Spawn | Signal | ReleaseGroup | StartTimer
           | CancelTimer | Probe | CancelProbe | Report | Observe | Note | Finished)
