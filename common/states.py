"""Instance and agent states: the protobuf enums as Python enums, with the word users see.

Where each state comes from:

    instance, reported by its agent    pending starting running unhealthy crashed stopping stopped
    one-shot run, once it ended        succeeded (exited 0) failed (any other end)
    instance, the scheduler's views    pending (wanted, no slot anywhere), lost (its agent is down)
    agent, the scheduler's view        ready draining drained (draining, nothing left) down

`ctl` shows `state.word`; the wire carries the number. Nothing compares a state as a string.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from proto import formation_pb2 as pb

if TYPE_CHECKING:
    # The generated stubs type an enum field as its own int subclass (pb.InstanceState), while
    # protobuf takes any int; so to mypy these enums are those subclasses too, and a field can be
    # given one without a cast. At run time they are plain IntEnums.
    class _InstanceEnum(pb.InstanceState, enum.ReprEnum): ...

    class _AgentEnum(pb.AgentState, enum.ReprEnum): ...
else:
    _InstanceEnum = _AgentEnum = enum.IntEnum


class InstanceState(_InstanceEnum):
    UNSPECIFIED = pb.INSTANCE_STATE_UNSPECIFIED
    PENDING = pb.INSTANCE_PENDING
    STARTING = pb.INSTANCE_STARTING
    RUNNING = pb.INSTANCE_RUNNING
    UNHEALTHY = pb.INSTANCE_UNHEALTHY
    CRASHED = pb.INSTANCE_CRASHED
    STOPPING = pb.INSTANCE_STOPPING
    STOPPED = pb.INSTANCE_STOPPED
    LOST = pb.INSTANCE_LOST  # the scheduler's view: the instance's agent is down
    SUCCEEDED = pb.INSTANCE_SUCCEEDED  # a one-shot run that exited 0
    FAILED = pb.INSTANCE_FAILED  # a one-shot run that ended otherwise (the reason says how)

    @property
    def word(self) -> str:
        """What `ctl` prints and `--json` carries: "running"."""
        return self.name.lower()


class AgentState(_AgentEnum):
    UNSPECIFIED = pb.AGENT_STATE_UNSPECIFIED
    READY = pb.AGENT_READY
    DRAINING = pb.AGENT_DRAINING
    DRAINED = pb.AGENT_DRAINED  # draining, and nothing is left on it
    DOWN = pb.AGENT_DOWN

    @property
    def word(self) -> str:
        return self.name.lower()


def is_instance_state(value: int) -> bool:
    """Is this number one of InstanceState's (UNSPECIFIED included)?"""
    return value in InstanceState._value2member_map_


def instance_word(value: int) -> str:
    """The word of a state number off the wire; an unknown number is said as such."""
    try:
        return InstanceState(value).word
    except ValueError:
        return f"unknown({value})"


def agent_word(value: int) -> str:
    try:
        return AgentState(value).word
    except ValueError:
        return f"unknown({value})"
