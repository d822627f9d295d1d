"""What an agent upgrade hands across its exec (agent/handover.py), on its own: a machine in any
state comes back the same from the JSON, and a handover value or document that is not one is
refused with a HandoverError, never half-adopted."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import handover
from agent.events import (
    Begin,
    Exited,
    InContact,
    PortAcquired,
    PortUnavailable,
    ProbeResult,
    Spawned,
    SpawnFailed,
    StopRequested,
    Timer,
    TimerFired,
)
from agent.machine import InstanceMachine
from agent.oneshot import OneShotMachine
from common.appdef import HealthCheck

CHECK = HealthCheck(type="tcp", interval=5, timeout=1, grace=2, failures=3)
EVENTS = st.one_of(
    st.just(Begin()), st.just(InContact()), st.builds(PortAcquired, st.integers(5000, 5010)),
    st.just(PortUnavailable("none free")), st.builds(Spawned, st.integers(100, 110)),
    st.just(SpawnFailed("ENOENT")), st.builds(Exited, st.integers(-15, 3), st.just(0)),
    st.builds(ProbeResult, st.booleans(), st.just("refused")),
    st.builds(StopRequested, st.none() | st.floats(0, 10)),
    st.builds(TimerFired, st.sampled_from(list(Timer))))


def fresh(kind: str) -> InstanceMachine:
    if kind == "oneshot":
        return OneShotMachine("release.3", 5.0, 30.0)
    return InstanceMachine("web.1", 10.0, CHECK if kind == "checked" else None,
                           at_most_once=kind == "once")


def fields(m: InstanceMachine) -> dict:
    return {k: v for k, v in vars(m).items() if k not in ("policy", "_out")} | \
        {"policy": dict(vars(m.policy))}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["plain", "checked", "once", "oneshot"]),
       st.lists(st.tuples(EVENTS, st.floats(0, 5)), max_size=30))
def test_a_machine_in_any_state_comes_back_the_same(kind, steps):
    m, now = fresh(kind), 0.0
    for event, later in steps:
        now += later
        m.handle(event, now)
    state = json.loads(json.dumps(handover.machine_state(m, now)))
    back = fresh(kind)
    handover.restore_machine(back, state)
    want = fields(m)
    if m.probing:  # a probe under way is not handed over: the next is due at once
        want["probing"] = False
        want["timers"] = {**m.timers, Timer.PROBE: now}
    assert fields(back) == want
    assert type(back.state) is type(m.state)


def test_unknown_and_mistyped_fields_are_left_alone():
    m = fresh("plain")
    state = handover.machine_state(m, 0.0)
    state.update(restarts="many", nonsense=1, _out=["x"], check={"type": "exec"}, pid=42)
    back = fresh("plain")
    handover.restore_machine(back, state)
    assert back.restarts == 0 and back.pid == 42 and not hasattr(back, "nonsense")
    assert back.check is None and back._out == []


def memfd(data: bytes) -> int:
    fd = os.memfd_create(handover.MEMFD, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def test_take_reads_the_document_once_and_removes_the_variable(monkeypatch):
    fd = handover.write({"version": handover.VERSION, "runners": []})
    monkeypatch.setenv(handover.HANDOVER_ENV, str(fd))
    assert handover.take() == {"version": handover.VERSION, "runners": []}
    assert handover.HANDOVER_ENV not in os.environ
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    assert handover.take() is None


@pytest.mark.parametrize("value", ["", "-1", "3x", "1e9", "99999", "٣", "0", "1", "2"])
def test_a_value_that_is_no_handover_memfd_is_refused_and_left_open(monkeypatch, value):
    monkeypatch.setenv(handover.HANDOVER_ENV, value)
    with pytest.raises(handover.HandoverError):
        handover.take()  # never reads stdin, never closes stdout
    assert handover.HANDOVER_ENV not in os.environ
    for fd in (0, 1, 2):
        os.fstat(fd)


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'"a string"',
                                  b'{"version": NaN, "x": 1e999}' + b" " * 10])
def test_a_document_that_is_not_a_json_object_is_refused(monkeypatch, data):
    monkeypatch.setenv(handover.HANDOVER_ENV, str(memfd(data)))
    if data.startswith(b'{"version": NaN'):  # JSON enough: its version decides (agent/main.py)
        document = handover.take()
        assert document is not None and document["version"] != handover.VERSION
        return
    with pytest.raises(handover.HandoverError):
        handover.take()


def test_a_document_too_long_is_refused(monkeypatch):
    monkeypatch.setattr(handover, "MAX_BYTES", 1000)
    monkeypatch.setenv(handover.HANDOVER_ENV, str(memfd(b"{" + b" " * 2000 + b"}")))
    with pytest.raises(handover.HandoverError, match="longer than 1000"):
        handover.take()
