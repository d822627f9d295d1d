"""Placement rules of docs/architecture.md as table tests and hypothesis properties. No I/O."""
from __future__ import annotations

from collections import Counter

from hypothesis import given, settings, strategies as st

from scheduler.placement import AgentView, Assigned, InstanceKey, plan, wanted_instances


def agents(*specs: tuple[str, int]) -> dict[str, AgentView]:
    return {n: AgentView(n, c) for n, c in specs}


def per_agent(assignments: dict[InstanceKey, Assigned], ptype: str | None = None) -> Counter:
    return Counter(a.agent for k, a in assignments.items() if ptype is None or k.type == ptype)


def test_fresh_placement_spreads_evenly():
    p = plan({("app", "web"): 10}, {"app": 1}, agents(("a", 100), ("b", 100)), {})
    after = p.assignments_after({}, {"app": 1})
    assert per_agent(after) == {"a": 5, "b": 5}
    assert sorted(k.id for k in after) == sorted(f"web.{n}" for n in range(1, 11))


def test_scale_down_removes_highest_numbers_first_and_keeps_the_rest_in_place():
    before = plan({("app", "web"): 10}, {"app": 1}, agents(("a", 100), ("b", 100)), {}) \
        .assignments_after({}, {"app": 1})
    p = plan({("app", "web"): 2}, {"app": 1}, agents(("a", 100), ("b", 100)), before)
    assert sorted(k.id for k in p.stop) == sorted(f"web.{n}" for n in range(3, 11))
    assert not p.place and not p.migrate
    after = p.assignments_after(before, {"app": 1})
    assert {k.id: a for k, a in after.items()} == \
        {k.id: a for k, a in before.items() if k.id in ("web.1", "web.2")}


def test_capacity_is_never_exceeded_and_the_rest_is_pending():
    p = plan({("app", "web"): 5}, {"app": 1}, agents(("a", 2), ("b", 1)), {})
    assert len(p.place) == 3
    assert [k.id for k in p.pending] == ["web.4", "web.5"]


def test_draining_and_down_agents_receive_nothing():
    views = {"a": AgentView("a", 10, alive=True, schedulable=False),
             "b": AgentView("b", 10, alive=False, schedulable=False),
             "c": AgentView("c", 10)}
    p = plan({("app", "web"): 3}, {"app": 1}, views, {})
    assert set(p.place.values()) == {"c"}


def test_instances_of_a_down_agent_migrate_and_keep_their_ids():
    key = InstanceKey("app", "web.1")
    views = {"a": AgentView("a", 10, alive=False, schedulable=False), "b": AgentView("b", 10)}
    p = plan({("app", "web"): 1}, {"app": 1}, views, {key: Assigned("a", 1)})
    assert p.migrate == {key: "b"}


def test_lost_instance_with_nowhere_to_go_is_unassigned_and_pending():
    key = InstanceKey("app", "web.1")
    views = {"a": AgentView("a", 10, alive=False, schedulable=False)}
    p = plan({("app", "web"): 1}, {"app": 1}, views, {key: Assigned("a", 1)})
    assert p.unassign == [key] and p.pending == [key]


def test_drain_hands_off_and_evicts_at_most_once_types():
    web, clock = InstanceKey("app", "web.1"), InstanceKey("app", "clock.1")
    views = {"a": AgentView("a", 10, schedulable=False, draining=True), "b": AgentView("b", 10)}
    before = {web: Assigned("a", 1), clock: Assigned("a", 1)}
    p = plan({("app", "web"): 1, ("app", "clock"): 1}, {"app": 1}, views, before,
             at_most_once={("app", "clock")})
    after = p.assignments_after(before, {"app": 1})
    assert after[web] == Assigned("b", 1, previous="a")
    assert clock not in after and p.pending == [clock]
    # Next round, while agent a still runs the old clock.1, it is not placed...
    again = plan({("app", "web"): 1, ("app", "clock"): 1}, {"app": 1}, views, after,
                 at_most_once={("app", "clock")}, blocked={clock})
    assert again.pending == [clock] and not again.place
    # ...and once it is gone, it is.
    last = plan({("app", "web"): 1, ("app", "clock"): 1}, {"app": 1}, views, after,
                at_most_once={("app", "clock")})
    assert last.place == {clock: "b"}


def test_an_instance_that_still_runs_somewhere_is_kept_there():
    key = InstanceKey("app", "web.1")
    views = {"a": AgentView("a", 10), "b": AgentView("b", 10), "c": AgentView("c", 10)}
    p = plan({("app", "web"): 3}, {"app": 1}, views, {}, running_on={key: "c"})
    assert p.place[key] == "c"
    assert sorted(p.place.values()) == ["a", "b", "c"]  # and the spread still holds


def test_new_release_updates_in_place():
    key = InstanceKey("app", "web.1")
    p = plan({("app", "web"): 1}, {"app": 2}, agents(("a", 10)), {key: Assigned("a", 1)})
    assert p.update == {key: 2} and not p.place


def test_apps_without_a_release_are_not_placed():
    p = plan({("app", "web"): 3}, {}, agents(("a", 10)), {})
    assert p.empty() and not p.pending


# ---- properties ---------------------------------------------------------------------------

names = st.sampled_from([f"agent-{i}" for i in range(8)])
agent_views = st.dictionaries(
    names, st.tuples(st.integers(0, 12), st.booleans(), st.sampled_from(["ready", "draining",
                                                                          "disconnected"])),
    max_size=8).map(
    lambda d: {n: AgentView(n, cap, alive=alive, schedulable=alive and mode == "ready",
                            draining=mode == "draining")
               for n, (cap, alive, mode) in d.items()})
desired_counts = st.dictionaries(
    st.tuples(st.sampled_from(["app", "other"]), st.sampled_from(["web", "worker", "clock"])),
    st.integers(0, 15), max_size=6)


@st.composite
def worlds(draw):
    views = draw(agent_views)
    desired = draw(desired_counts)
    releases = {"app": 1, "other": draw(st.integers(1, 2))}
    once = draw(st.sets(st.sampled_from([("app", "web"), ("other", "worker")])))
    # Some existing assignments, possibly on unknown or down agents, possibly unwanted.
    keys = draw(st.lists(st.tuples(st.sampled_from(["app", "other"]),
                                   st.sampled_from(["web", "worker", "clock"]),
                                   st.integers(1, 20)), max_size=30, unique=True))
    where = st.sampled_from(sorted(views) + ["gone"]) if views else st.just("gone")
    assignments = {InstanceKey(a, f"{t}.{n}"): Assigned(draw(where), 1) for a, t, n in keys}
    # Existing assignments on live agents respect capacity, as they would in a real cluster.
    load: Counter = Counter()
    for key in sorted(assignments):
        agent = views.get(assignments[key].agent)
        if agent is not None and agent.alive:
            if load[agent.name] >= agent.capacity:
                del assignments[key]
                continue
            load[agent.name] += 1
    blocked = set(draw(st.lists(st.sampled_from(sorted(assignments)), max_size=3))) \
        if assignments else set()
    running_on = draw(st.dictionaries(st.sampled_from(wanted_instances(desired)), names,
                                      max_size=5)) if any(desired.values()) else {}
    return desired, releases, views, assignments, once, blocked, running_on


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_properties_of_every_plan(world):
    desired, releases, views, before, once, blocked, running_on = world
    p = plan(desired, releases, views, before, once, blocked, running_on)
    after = p.assignments_after(before, releases)
    wanted = set(wanted_instances(desired))

    # Running + placed - stopped == desired: every wanted instance is assigned or pending.
    assert set(after) | set(p.pending) == wanted
    assert not set(after) & set(p.pending)
    # Rule 1: new homes only on schedulable agents.
    for agent in (*p.place.values(), *p.migrate.values()):
        assert views[agent].schedulable
    # Rule 2: no agent over capacity.
    for agent, n in per_agent(after).items():
        assert agent not in views or not views[agent].alive or n <= views[agent].capacity
    # Rule 3: instances on live agents stay where they are (unless draining); only unwanted
    # ones are removed.
    for key, a in before.items():
        if key in wanted and a.agent in views and views[a.agent].alive:
            if not views[a.agent].draining:
                assert after[key].agent == a.agent
            elif (key.app, key.type) in once:
                assert key not in after  # evicted: stopped before it is placed elsewhere
            elif after[key].agent != a.agent:
                assert after[key].previous == a.agent  # handed off: old copy runs until then
        if key not in wanted:
            assert key in p.stop and key not in after
    # Never two homes for a blocked instance that had none.
    for key in blocked:
        if key not in before:
            assert key not in after
    # Pending only when no schedulable agent had a free slot (or it waits for an old copy).
    free = [v for v in views.values() if v.schedulable and
            per_agent({k: a for k, a in after.items()
                       if views.get(a.agent) and views[a.agent].alive})[v.name] < v.capacity]
    for key in p.pending:
        assert key in blocked or (key in before and (key.app, key.type) in once) or not free
    # Rule 5: deterministic.
    assert plan(desired, releases, views, before, once, blocked, running_on) == p


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=6), st.integers(0, 60),
       st.integers(0, 60))
def test_rule4_fresh_placement_spreads_each_type_within_one(caps, web, worker):
    views = {f"a{i}": AgentView(f"a{i}", 1000) for i in range(len(caps))}
    p = plan({("app", "web"): web, ("app", "worker"): worker}, {"app": 1}, views, {})
    after = p.assignments_after({}, {"app": 1})
    for ptype in ("web", "worker"):
        counts = [per_agent(after, ptype)[name] for name in views]
        assert max(counts) - min(counts) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=6), st.integers(0, 40))
def test_rule4_new_instances_go_to_the_agent_with_fewest_of_their_type(caps, n):
    views = {f"a{i}": AgentView(f"a{i}", c) for i, c in enumerate(caps)}
    p = plan({("app", "web"): n}, {"app": 1}, views, {})
    after = p.assignments_after({}, {"app": 1})
    counts = per_agent(after)
    # Where capacity allows, counts differ by at most one: an agent with fewer than the
    # maximum must be full.
    top = max(counts.values(), default=0)
    for name, v in views.items():
        if counts[name] < top - 1:
            assert counts[name] == v.capacity
