"""The rolling-update planner (scheduler/rollout.py): tables for the simple cases, then its
rules as hypothesis properties over a simulated process type driven through many steps (new
copies become healthy, crash, or never become healthy; time advances). No I/O, no sleeps."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.rollout import (
    BREAKER,
    Copy,
    Progress,
    Settings,
    Slot,
    State,
    Step,
    beyond,
    breaker,
    next_step,
    resolve,
    reverted,
    settings_for,
)

NOW = 100.0
H = Copy(State.HEALTHY, 0.0)  # an old copy that has served for long


def olds(n: int, ptype: str = "web") -> dict[str, Slot]:
    return {f"{ptype}.{i}": Slot(old=H) for i in range(1, n + 1)}


def ids(ptype: str, *numbers: int) -> tuple[str, ...]:
    return tuple(f"{ptype}.{n}" for n in numbers)


# ---- resolve and settings_for -----------------------------------------------------------------

@pytest.mark.parametrize("spec, desired, up, count", [
    ("25%", 10, True, 3), ("25%", 10, False, 2),      # surge rounds up, unavailable down
    ("25%", 1, True, 1), ("25%", 1, False, 0), ("25%", 3, False, 0),
    ("0%", 10, True, 0), ("100%", 10, False, 10), ("100%", 7, True, 7), ("50%", 0, True, 0),
    (3, 10, True, 3), (0, 10, False, 0), (3, 1, True, 3),  # counts are counts (clamped later)
])
def test_resolve_turns_a_count_or_a_percent_into_a_count(spec, desired, up, count):
    assert resolve(spec, desired, up) == count


@pytest.mark.parametrize("spec", ["150%", "101%", "-1", "-1%", "abc", "", "3", "25", "25.5%",
                                  " 25%", "%", "025%", "٣%", "x" * 500, -1, 10_001, True, 2.5])
def test_resolve_refuses_a_bad_spec_with_one_line(spec):
    with pytest.raises(ValueError) as e:
        resolve(spec, 10, True)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200  # never the whole input


@pytest.mark.parametrize("desired, surge, unavailable, once, want", [
    (10, "25%", 0, False, (3, 0)),     # web: surge a quarter, never below the count
    (8, 0, "25%", False, (0, 2)),      # worker: replace a quarter in place
    (10, "25%", "25%", False, (3, 2)),
    (3, 0, 0, False, (1, 0)),          # both zero: surge 1, so progress is possible
    (2, 0, "25%", False, (0, 1)),      # a quarter of 2 down is 0: one down, never a surge
    (3, "25%", "10%", False, (1, 0)),
    (0, "25%", 0, False, (1, 0)),
    (2, 5, 9, False, (2, 2)),          # more than the count means the count
    (1, "25%", 0, True, (0, 1)),       # at_most_once: never surge, at least one at a time
    (8, 2, "50%", True, (0, 4)),
])
def test_settings_for_resolves_and_always_allows_progress(desired, surge, unavailable, once,
                                                          want):
    s = settings_for(desired, surge, unavailable, at_most_once=once)
    assert (s.max_surge, s.max_unavailable) == want and s.at_most_once is once


def test_settings_refuse_what_would_stall_a_rollout_or_run_two_copies():
    with pytest.raises(ValueError, match="max_surge must be a count"):
        settings_for(10, "abc", 0)
    with pytest.raises(ValueError, match="max_unavailable must be a count"):
        settings_for(10, 0, "-1")
    for bad in (dict(max_surge=0, max_unavailable=0), dict(max_surge=-1, max_unavailable=1),
                dict(max_surge=1, max_unavailable=1, at_most_once=True),
                dict(max_surge=0, max_unavailable=0, at_most_once=True),
                dict(max_surge=1, max_unavailable=0, min_healthy_time=5, healthy_deadline=4),
                dict(max_surge=1, max_unavailable=0, min_healthy_time=-1)):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]


def test_breaker_is_three_or_the_parallelism():
    assert BREAKER == 3
    assert breaker(settings_for(10, "25%", 0), 10) == 3
    assert breaker(settings_for(100, "25%", 0), 100) == 25
    assert breaker(settings_for(1, 1, 1), 1) == 3


# ---- the simple cases -------------------------------------------------------------------------

def test_web10_surge25_starts_three_surge_copies_then_retires_them_once_proven():
    s = settings_for(10, "25%", 0)  # min_healthy_time 2
    slots = olds(10)
    step = next_step("web", 10, slots, s, NOW)
    assert step == Step(start_new=ids("web", 1, 2, 3), progress=Progress(0, 0, 10))
    for i in step.start_new:
        slots[i] = Slot(old=H, new=Copy(State.HEALTHY, NOW), started=NOW)
    assert next_step("web", 10, slots, s, NOW + 1).stop_old == ()  # healthy, not proven yet
    step = next_step("web", 10, slots, s, NOW + 2)
    assert step.stop_old == ids("web", 1, 2, 3) and step.proven == ids("web", 1, 2, 3)
    assert step.start_new == ()  # the retired copies hold their slots until gone
    for i in step.stop_old:
        slots[i] = Slot(old=Copy(State.STOPPING, NOW + 2), new=slots[i].new, updated=True)
    assert next_step("web", 10, slots, s, NOW + 3).start_new == ()
    for i in step.stop_old:
        slots[i] = Slot(new=slots[i].new, updated=True)
    step = next_step("web", 10, slots, s, NOW + 4)
    assert step.start_new == ids("web", 4, 5, 6) and step.progress == Progress(3, 3, 10)


def test_worker_surge0_unavailable25_stops_first_and_waits_for_proof():
    s = settings_for(8, 0, "25%", min_healthy_time=2)
    slots = olds(8, "worker")
    step = next_step("worker", 8, slots, s, NOW)
    assert step == Step(stop_old=ids("worker", 1, 2), progress=Progress(0, 0, 8))
    for i in step.stop_old:
        slots[i] = Slot(old=Copy(State.STOPPING, NOW))
    assert next_step("worker", 8, slots, s, NOW + 1).start_new == ()  # not gone yet
    for i in step.stop_old:
        slots[i] = Slot()
    assert next_step("worker", 8, slots, s, NOW + 2).start_new == ids("worker", 1, 2)
    for i in step.stop_old:
        slots[i] = Slot(new=Copy(State.HEALTHY, NOW + 3), started=NOW + 2)
    assert next_step("worker", 8, slots, s, NOW + 4).stop_old == ()  # 6 serve: the floor
    step = next_step("worker", 8, slots, s, NOW + 5)
    assert step.stop_old == ids("worker", 3, 4) and step.proven == ids("worker", 1, 2)


def test_at_most_once_stops_the_old_copy_and_starts_the_new_one_once_it_is_reported_gone():
    s = settings_for(1, "25%", 0, at_most_once=True)
    assert next_step("clock", 1, {"clock.1": Slot(old=H)}, s, NOW).stop_old == ("clock.1",)
    for old in (Copy(State.STOPPING), Copy(State.CRASHED), Copy(State.STARTING)):
        step = next_step("clock", 1, {"clock.1": Slot(old=old)}, s, NOW)
        assert step.start_new == ()
    for gone in (Slot(old=Copy(State.STOPPED)), Slot()):
        assert next_step("clock", 1, {"clock.1": gone}, s, NOW).start_new == ("clock.1",)


def test_all_zero_settings_still_progress_with_one_surge_copy():
    step = next_step("web", 3, olds(3), settings_for(3, 0, 0), NOW)
    assert step.start_new == ("web.1",) and step.stop_old == ()


def test_an_old_copy_that_does_not_serve_is_replaced_stop_first_whatever_the_budgets():
    slots = {**olds(3), "web.2": Slot(old=Copy(State.CRASHED))}
    step = next_step("web", 3, slots, settings_for(3, 2, 0), NOW)
    assert step.start_new == ("web.1", "web.3") and step.stop_old == ("web.2",)  # surge kept
    step = next_step("web", 3, slots, settings_for(3, 0, 0), NOW)  # for the serving ones
    assert step.start_new == ("web.1",) and step.stop_old == ("web.2",)


def test_retirement_waits_while_it_would_take_serving_below_the_floor():
    proven = Copy(State.HEALTHY, 0.0)
    slots = {"web.1": Slot(old=H, new=proven, started=0.0), "web.2": Slot(old=Copy(State.CRASHED)),
             "web.3": Slot(old=H)}
    step = next_step("web", 3, slots, settings_for(3, 1, 0), NOW)
    assert step.stop_old == ("web.2",)  # web.1's old copy stays: 2 would serve of a floor of 3


def test_scale_up_during_a_rollout_starts_the_new_ids_on_the_new_release_first():
    s = settings_for(5, 1, 0)
    slots = olds(3)
    step = next_step("web", 5, slots, s, NOW)
    assert step.start_new == ids("web", 1, 4, 5)  # no copy at all: first claim on the cap
    step = next_step("web", 5, {**slots, "web.6": Slot(old=H)}, s, NOW)
    assert step.start_new == ids("web", 4, 5)     # web.6 still holds a slot


def test_lower_ids_first_when_the_cap_is_short():
    slots = {"web.3": Slot(old=H), "web.4": Slot(old=Copy(State.STOPPING)),
             "web.5": Slot(old=Copy(State.STOPPING))}  # scaled down, not gone yet
    step = next_step("web", 3, slots, settings_for(3, 1, 0), NOW)
    assert step.start_new == ("web.1",) and step.stop_old == ()


def test_ids_above_desired_are_left_to_placement_but_hold_their_slots():
    slots = olds(4)
    step = next_step("web", 2, slots, settings_for(2, 1, 0), NOW)
    assert step == Step(progress=Progress(0, 0, 2))
    assert beyond("web", 2, slots) == ["web.3", "web.4"]
    del slots["web.3"]
    slots["web.4"] = Slot(old=Copy(State.STOPPED))
    assert beyond("web", 2, slots) == []
    assert next_step("web", 2, slots, settings_for(2, 1, 0), NOW).start_new == ("web.1",)
    with pytest.raises(ValueError):
        next_step("web", 2, {"worker.1": Slot()}, settings_for(2, 1, 0), NOW)


def test_a_new_copy_not_proven_within_healthy_deadline_fails_the_rollout():
    s = settings_for(2, 2, 0, healthy_deadline=60)
    slots = {"web.1": Slot(old=H, new=Copy(State.STARTING, NOW), started=NOW),
             "web.2": Slot(old=H)}
    assert next_step("web", 2, slots, s, NOW + 60) == Step(start_new=("web.2",),
                                                           progress=Progress(0, 0, 2))
    step = next_step("web", 2, slots, s, NOW + 60.5)
    assert step.failed and "web.1" in step.failed and "\n" not in step.failed
    assert step.start_new == step.stop_old == ()
    # Healthy, but too late to be proven in time: failed all the same.
    slots["web.1"] = Slot(old=H, new=Copy(State.HEALTHY, NOW + 59), started=NOW)
    assert next_step("web", 2, slots, s, NOW + 60.5).failed
    # A stopping new copy is not on the clock.
    slots["web.1"] = Slot(new=Copy(State.STOPPING, NOW + 59), started=NOW)
    assert next_step("web", 2, slots, s, NOW + 60.5).failed is None


def test_the_breaker_fails_at_once_when_new_copies_crash_and_none_was_healthy():
    s = settings_for(10, "25%", 0)
    crashed = Copy(State.CRASHED, NOW + 0.5)
    slots = olds(9) | {i: Slot(old=H, new=crashed, started=NOW, crashes=1)
                       for i in ids("web", 1, 2)}  # web.10 just scaled up: room to start it
    step = next_step("web", 10, slots, s, NOW + 1)
    assert step.failed is None and step.start_new == ("web.3", "web.10")  # 2: unlucky
    slots["web.3"] = Slot(old=H, new=crashed, started=NOW, failed_checks=1)
    step = next_step("web", 10, slots, s, NOW + 1)
    assert step.failed and step.failed.startswith("crash-loop breaker")
    assert step.start_new == step.stop_old == ()
    # One new copy proven once: the release can run; a crash is an instance's own business.
    slots["web.4"] = Slot(new=Copy(State.CRASHED, NOW), started=NOW, updated=True, crashes=5)
    assert next_step("web", 10, slots, s, NOW + 1).failed is None


def test_done_and_progress():
    s = settings_for(2, 1, 0)
    proven = Copy(State.HEALTHY, 0.0)
    assert next_step("web", 0, {}, s, NOW) == Step(done=True, progress=Progress(0, 0, 0))
    slots = {"web.1": Slot(new=proven, updated=True), "web.2": Slot(new=proven)}
    step = next_step("web", 2, slots, s, NOW)
    assert step.done and step.progress == Progress(2, 2, 2) and step.proven == ("web.2",)
    slots["web.2"] = Slot(old=Copy(State.STOPPING), new=proven, updated=True)
    assert not next_step("web", 2, slots, s, NOW).done
    slots["web.2"] = Slot(new=Copy(State.CRASHED), updated=True)  # proven, then crashed
    step = next_step("web", 2, slots, s, NOW)
    assert step.done and step.progress == Progress(2, 1, 2)
    slots["web.2"] = Slot(new=Copy(State.STOPPING), updated=True)  # scaled down, then up
    step = next_step("web", 2, slots, s, NOW)
    assert not step.done and step.progress == Progress(1, 1, 2)


def test_reverted_swaps_the_copies_and_starts_the_clock_over():
    bad, good = Copy(State.CRASHED, 5.0), Copy(State.HEALTHY, 0.0)
    slots = {"web.1": Slot(old=good, new=bad, started=1.0, crashes=3),
             "web.2": Slot(new=bad, started=1.0, failed_checks=2),
             "web.3": Slot(old=Copy(State.STOPPING, 2.0))}
    assert reverted(slots, 9.0) == {"web.1": Slot(old=bad, new=good, started=9.0),
                                    "web.2": Slot(old=bad),
                                    "web.3": Slot(new=Copy(State.STOPPING, 2.0), started=9.0)}


# ---- the simulation ---------------------------------------------------------------------------

BEHAVIOURS = ("good", "crash", "hang", "flaky")


@dataclass
class SimCopy:
    release: int
    behaviour: str  # good: healthy after its boot; crash: exits at once; hang: never healthy
    state: State = State.STARTING
    since: float = 0.0
    timer: int = 0  # ticks left to boot, or to stop

    def view(self) -> Copy:
        return Copy(self.state, self.since)


@dataclass
class SimSlot:
    old: SimCopy | None = None
    new: SimCopy | None = None
    started: float | None = None
    crashes: int = 0
    failed_checks: int = 0
    updated: bool = False

    def view(self) -> Slot:
        return Slot(self.old.view() if self.old else None, self.new.view() if self.new else None,
                    self.started, self.crashes, self.failed_checks, self.updated)


@dataclass
class Tick:
    """One step of the simulation: what the planner saw, what it said, and the world after."""
    desired: int
    settings: Settings
    view: dict[str, Slot]
    step: Step
    now: float
    after: list[tuple[int, int, set[str]]] = field(default_factory=list)  # serving, copies, both


def _there(c: Copy | None) -> bool:
    return c is not None and c.state is not State.STOPPED


def _serving(slots: dict[str, Slot], desired: int) -> int:
    wanted = {f"web.{n}" for n in range(1, desired + 1)}
    return sum(c is not None and c.state is State.HEALTHY
               for i, s in slots.items() if i in wanted for c in (s.old, s.new))


def _copies(slots: dict[str, Slot]) -> int:
    return sum(_there(c) for s in slots.values() for c in (s.old, s.new))


class Sim:
    """One `web` type under the planner, old copies on release 1 healthy for long."""

    def __init__(self, rnd: random.Random, desired: int, specs: dict, behaviour: str,
                 shaky_olds: bool = False) -> None:
        self.rnd, self.desired, self.specs = rnd, desired, specs
        self.behaviour, self.shaky_olds, self.now = behaviour, shaky_olds, NOW
        self.release = 2  # what start_new starts
        self.slots = {f"web.{n}": SimSlot(old=SimCopy(1, "good", State.HEALTHY))
                      for n in range(1, desired + 1)}
        self.trace: list[Tick] = []
        self.failed: str | None = None

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Sim(web={self.desired}, {self.specs}, new copies {self.behaviour!r}, " \
            f"shaky olds: {self.shaky_olds})"

    def settings(self) -> Settings:
        return settings_for(self.desired, **self.specs)

    def views(self) -> dict[str, Slot]:
        return {i: s.view() for i, s in self.slots.items()}

    def measure(self, tick: Tick) -> None:
        views = self.views()
        both = {i for i, s in views.items() if _there(s.old) and _there(s.new)}
        tick.after.append((_serving(views, self.desired), _copies(views), both))

    def tick(self) -> Step:
        view, s = self.views(), self.settings()
        step = next_step("web", self.desired, view, s, self.now)
        tick = Tick(self.desired, s, view, step, self.now)
        self.trace.append(tick)
        if step.failed:
            self.failed = step.failed
        for i in step.stop_old:
            old = self.slots[i].old
            assert old is not None
            old.state, old.since, old.timer = State.STOPPING, self.now, self.rnd.randint(0, 2)
        for i in step.start_new:
            slot = self.slots[i]
            slot.new = SimCopy(self.release, self.behaviour, since=self.now,
                               timer=self.rnd.randint(0, 3))
            slot.started, slot.updated = self.now, False
        for i in step.proven:
            self.slots[i].updated = True
        self.measure(tick)
        self.now += 1
        for slot in self.slots.values():
            slot.old = self.evolve(slot.old, slot, self.shaky_olds)
            slot.new = self.evolve(slot.new, slot, False)
        self.measure(tick)
        return step

    def evolve(self, c: SimCopy | None, slot: SimSlot, shaky: bool) -> SimCopy | None:
        """One second of a copy's life; the failures of the slot's new copy are counted."""
        if c is None or c.state is State.STOPPED:
            return c
        r, before = self.rnd.random(), c.state
        if c.state is State.STOPPING:
            c.timer -= 1
            return None if c.timer < 0 else c
        if c.state is State.CRASHED:
            c.state, c.timer = State.STARTING, self.rnd.randint(0, 2)  # its agent restarts it
        elif c.behaviour == "crash" and c.state is State.STARTING:
            c.state = State.CRASHED
        elif c.behaviour == "good" and c.state is State.STARTING:
            c.timer -= 1
            c.state = State.HEALTHY if c.timer < 0 else c.state
        elif c.behaviour == "good" and c.state is State.UNHEALTHY:
            c.state = State.HEALTHY  # a flaky copy that was made good
        elif c.behaviour == "flaky" or shaky:
            if c.state is State.STARTING:
                c.state = State.HEALTHY if r < 0.4 else State.CRASHED if r < 0.6 else c.state
            elif c.state is State.HEALTHY:
                c.state = State.UNHEALTHY if r < 0.1 else State.CRASHED if r < 0.15 else c.state
            elif c.state is State.UNHEALTHY:
                c.state = State.HEALTHY if r < 0.5 else State.CRASHED
        if c.state is not before:
            c.since = self.now
            if c is slot.new:
                slot.crashes += c.state is State.CRASHED
                slot.failed_checks += c.state is State.UNHEALTHY
        return c

    def run(self, limit: int) -> None:
        while len(self.trace) < limit and not self.failed and not self.tick().done:
            pass

    def revert(self) -> None:
        """Roll back the failed release: the same planner, from release 2 back to release 1."""
        before = self.views()
        for slot in self.slots.values():
            slot.old, slot.new = slot.new, slot.old
            slot.started = self.now if slot.new and slot.new.state is not State.STOPPED else None
            slot.crashes = slot.failed_checks = 0
            slot.updated = False
        assert self.views() == reverted(before, self.now)
        self.behaviour, self.release, self.failed = "good", 1, None


SURGES = st.sampled_from([0, 1, 2, "25%", "50%", "100%"])
UNAVAILABLES = st.sampled_from([0, 1, "25%", "50%"])


@st.composite
def sims(draw, behaviours=BEHAVIOURS, at_most_once=(False, True), least=0, shaky=False,
         deadline=30.0) -> Sim:
    specs = dict(max_surge=draw(SURGES), max_unavailable=draw(UNAVAILABLES),
                 min_healthy_time=draw(st.sampled_from([0.0, 1.0, 2.0])),
                 healthy_deadline=deadline, at_most_once=draw(st.sampled_from(at_most_once)))
    return Sim(draw(st.randoms(use_true_random=False)), draw(st.integers(least, 10)), specs,
               draw(st.sampled_from(behaviours)), shaky_olds=shaky and draw(st.booleans()))


def bound(desired: int) -> int:
    """Ticks a rollout of good copies may take: per id at most a stop (3), a boot (4), the
    proof (2) and a retirement (3), and one id at a time at the slowest."""
    return 12 * (desired + 1)


def floor(t: Tick) -> int:
    return t.desired - t.settings.max_unavailable


def healthy_stops(t: Tick) -> int:
    """Serving copies the step stops."""
    return sum(1 for i in t.step.stop_old
               if (old := t.view[i].old) is not None and old.state is State.HEALTHY)


FAST = settings(max_examples=25, deadline=None)


@FAST
@given(sims(shaky=True))
def test_rule1_serving_never_drops_below_the_floor_by_the_rollouts_own_decisions(sim):
    strict = not sim.shaky_olds and sim.behaviour != "flaky"
    sim.run(bound(sim.desired))
    for t in sim.trace:
        stopped = healthy_stops(t)
        if stopped:
            assert _serving(t.view, t.desired) - stopped >= floor(t)
        for i in t.step.stop_old:  # a retirement waits for its new copy's proof
            new = t.view[i].new
            assert new is None or new.state is State.STOPPED or (
                new.state is State.HEALTHY and t.now - new.since >= t.settings.min_healthy_time)
        if strict:  # nothing else takes a copy down: the floor holds at every moment
            assert all(serving >= floor(t) for serving, _, _ in t.after)


@FAST
@given(sims(shaky=True))
def test_rule2_copies_never_exceed_desired_plus_surge(sim):
    sim.run(bound(sim.desired))
    for t in sim.trace:
        cap = t.desired + t.settings.max_surge
        if t.step.start_new:
            assert _copies(t.view) + len(t.step.start_new) <= cap
        assert all(copies <= cap for _, copies, _ in t.after)


@FAST
@given(sims(at_most_once=(True,), shaky=True))
def test_rule3_at_most_once_never_runs_two_copies_of_an_id(sim):
    sim.run(bound(sim.desired))
    for t in sim.trace:
        for i in t.step.start_new:
            assert t.view[i].old is None or t.view[i].old.state is State.STOPPED
        assert all(not both for _, _, both in t.after)


@FAST
@given(sims(behaviours=("good",)))
def test_rule4_healthy_new_copies_finish_the_rollout_in_bounded_steps(sim):
    sim.run(bound(sim.desired))
    assert sim.trace[-1].step.done and not sim.failed, (len(sim.trace), sim.trace[-1].step)
    assert all(s.old is None and s.new is not None and s.new.release == 2
               and s.new.state is State.HEALTHY for s in sim.slots.values())
    progress = sim.trace[-1].step.progress
    assert progress == Progress(sim.desired, sim.desired, sim.desired)


@FAST
@given(sims(behaviours=("hang",), least=1, deadline=8.0))
def test_rule5_a_new_copy_not_healthy_by_its_deadline_fails_the_rollout(sim):
    sim.run(bound(sim.desired) + 10)
    assert sim.failed and "healthy_deadline" in sim.failed
    t = sim.trace[-1]
    first = min(s.started for s in t.view.values() if s.started is not None)
    assert 8.0 < t.now - first <= 9.0


@FAST
@given(sims(behaviours=("crash",), least=1, deadline=60.0))
def test_rule5_the_breaker_fails_a_crash_looping_release_long_before_its_deadline(sim):
    sim.run(bound(sim.desired))
    assert sim.failed and sim.failed.startswith("crash-loop breaker")
    t = sim.trace[-1]
    first = min(s.started for s in t.view.values() if s.started is not None)
    assert t.now - first <= 2 * breaker(t.settings, t.desired) + 1 < 60.0 / 2


@FAST
@given(sims(behaviours=("crash", "hang", "flaky"), least=1, deadline=8.0))
def test_rule6_a_failed_rollout_stops_nothing_more_and_reverts_above_the_floor(sim):
    sim.run(bound(sim.desired) + 10)
    if not sim.failed:
        assert sim.behaviour == "flaky"  # a flaky release may make it; the others may not
        return
    failed = sim.trace[-1].step
    assert failed.start_new == failed.stop_old == ()
    strict = sim.behaviour != "flaky"
    sim.revert()
    start = len(sim.trace)
    sim.run(start + bound(sim.desired))
    assert not sim.failed and sim.trace[-1].step.done
    for t in sim.trace[start:]:
        if strict:
            assert all(serving >= floor(t) for serving, _, _ in t.after)
    assert all(s.old is None and s.new is not None and s.new.release == 1
               for s in sim.slots.values())


@FAST
@given(sims(shaky=True))
def test_rule7_same_inputs_same_step_lower_ids_first(sim):
    sim.run(bound(sim.desired))
    for t in sim.trace:
        again = next_step("web", t.desired, dict(reversed(t.view.items())), t.settings, t.now)
        assert again == t.step
        for bucket in (t.step.start_new, t.step.stop_old, t.step.proven):
            numbers = [int(i.split(".")[1]) for i in bucket]
            assert numbers == sorted(set(numbers))
        # Where a budget runs out, the ids served are the lowest of those waiting for it.
        live = (State.STARTING, State.HEALTHY, State.UNHEALTHY, State.CRASHED)
        wanted = [f"web.{n}" for n in range(1, t.desired + 1)]
        slot = {i: t.view.get(i, Slot()) for i in wanted}
        empty = [i for i in wanted if not _there(slot[i].old) and not _there(slot[i].new)]
        serving_olds = [i for i in wanted if not _there(slot[i].new)
                        and (old := slot[i].old) is not None and old.state is State.HEALTHY]
        acted = set(t.step.start_new) | set(t.step.stop_old)
        for waiting in (empty, serving_olds):
            served = [i in acted for i in waiting]
            assert served == sorted(served, reverse=True), (waiting, t.step)
        for i in t.step.stop_old:  # never a copy already stopping, nor one that is gone
            assert (old := t.view[i].old) is not None and old.state in live


@FAST
@given(sims(behaviours=("good", "flaky"), shaky=True), st.lists(st.integers(0, 12), max_size=4))
def test_scaling_during_a_rollout_keeps_the_rules_and_still_finishes(sim, counts):
    """Scale at a few ticks (placement stops ids above the count, new ids start empty); every
    decision keeps the budgets, and once scaling stops, good copies finish the rollout."""
    for count in counts:
        for _ in range(sim.rnd.randint(0, 4)):
            sim.tick()
        sim.desired = count
        for n, slot in list(sim.slots.items()):
            if int(n.split(".")[1]) > count:  # placement's scale-down
                for c in (slot.old, slot.new):
                    if c is not None and c.state is not State.STOPPING:
                        c.state, c.timer = State.STOPPING, sim.rnd.randint(0, 2)
        for n in range(1, count + 1):
            sim.slots.setdefault(f"web.{n}", SimSlot())
    if sim.failed:
        return
    sim.behaviour, sim.shaky_olds = "good", False
    for slot in sim.slots.values():  # from now on the release is a good one
        for c in (slot.old, slot.new):
            if c is not None:
                c.behaviour = "good"
    start = len(sim.trace)
    sim.run(start + bound(len(sim.slots)) + 5)
    for t in sim.trace:
        stopped = healthy_stops(t)
        assert not stopped or _serving(t.view, t.desired) - stopped >= floor(t)
        if t.step.start_new:
            assert _copies(t.view) + len(t.step.start_new) <= t.desired + t.settings.max_surge
        assert all(int(i.split(".")[1]) <= t.desired for i in t.step.start_new + t.step.stop_old)
    if sim.failed:  # flaky copies before the scaling stopped may have tripped it
        return
    assert sim.trace[-1].step.done
    for _ in range(3):  # placement's stops of ids above the count end too
        sim.tick()
    wanted = {f"web.{n}" for n in range(1, sim.desired + 1)}
    for i, s in sim.slots.items():
        assert s.old is None and (s.new is not None) == (i in wanted)
