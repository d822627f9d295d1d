"""Placement rules of scheduler/placement.py and docs/architecture.md as table tests and
hypothesis properties. No I/O. Each table test pins one rule; the properties check every rule
on random clusters, against a slow and obvious model of where each homeless instance goes."""
from __future__ import annotations

from collections import Counter

from hypothesis import event, given, settings
from hypothesis import strategies as st

from scheduler.placement import AgentView, Assigned, InstanceKey, Plan, plan, wanted_instances

R1 = {"app": 1}


def agents(*specs: tuple[str, int]) -> dict[str, AgentView]:
    return {n: AgentView(n, c) for n, c in specs}


def down(name: str, capacity: int = 10) -> AgentView:
    return AgentView(name, capacity, alive=False, schedulable=False)


def draining(name: str, capacity: int = 10) -> AgentView:
    return AgentView(name, capacity, schedulable=False, draining=True)


def disconnected(name: str, capacity: int = 10) -> AgentView:
    return AgentView(name, capacity, schedulable=False)  # alive (not timed out), not ready


def web(n: int, app: str = "app") -> InstanceKey:
    return InstanceKey(app, f"web.{n}")


def per_agent(assignments: dict[InstanceKey, Assigned], ptype: str | None = None) -> Counter:
    return Counter(a.agent for k, a in assignments.items() if ptype is None or k.type == ptype)


def on(agent: str, *keys: InstanceKey, release: int = 1) -> dict[InstanceKey, Assigned]:
    return {k: Assigned(agent, release) for k in keys}


def assert_running_plus_placed_minus_stopped_is_desired(p: Plan, before, desired) -> None:
    """The invariant where everything fits and no agent is down or draining."""
    assert not p.pending and not p.migrate and not p.unassign
    assert len(before) + len(p.place) - len(p.stop) == sum(desired.values())
    assert set(p.assignments_after(before, R1)) == set(wanted_instances(desired))


# ---- rule 1: only ready agents (not down, not draining, connected) receive new instances ----

def test_rule1_only_ready_agents_receive_new_instances():
    # The unready agents come first by name and are empty: any of them would win the spread.
    views = {"a": draining("a"), "b": down("b"), "c": disconnected("c"), "d": AgentView("d", 10)}
    p = plan({("app", "web"): 3}, R1, views, {})
    assert p.place == {web(1): "d", web(2): "d", web(3): "d"}


def test_rule1_migrations_and_handoffs_only_go_to_ready_agents():
    views = {"a": draining("a"), "b": down("b"), "c": disconnected("c"), "d": AgentView("d", 10)}
    before = {web(1): Assigned("b", 1), web(2): Assigned("a", 1)}
    p = plan({("app", "web"): 2}, R1, views, before)
    assert p.migrate == {web(1): "d", web(2): "d"}


def test_rule1_nothing_is_placed_without_a_ready_agent():
    views = {"a": draining("a"), "b": down("b"), "c": disconnected("c")}
    p = plan({("app", "web"): 2}, R1, views, {})
    assert not p.place and p.pending == [web(1), web(2)]


# ---- rule 2: no agent goes over its capacity ---------------------------------------------------

def test_rule2_every_agent_stays_within_its_capacity_and_the_rest_is_pending():
    caps = {"a": 2, "b": 1, "c": 0, "d": 3}
    p = plan({("app", "web"): 8}, R1, agents(*caps.items()), {})
    after = p.assignments_after({}, R1)
    assert per_agent(after) == {"a": 2, "b": 1, "d": 3}  # each agent exactly full
    for name, n in per_agent(after).items():
        assert n <= caps[name]
    assert p.pending == [web(7), web(8)]  # the highest numbers wait


def test_rule2_an_agent_with_one_slot_left_takes_exactly_one_more():
    before = on("a", web(1), web(2))
    p = plan({("app", "web"): 5}, R1, agents(("a", 3), ("b", 1)), before)
    assert p.place == {web(3): "b", web(4): "a"} and p.pending == [web(5)]


def test_rule2_instances_already_running_use_up_capacity():
    worker = InstanceKey("app", "worker.1")
    before = {**on("a", web(1)), worker: Assigned("a", 1)}
    p = plan({("app", "web"): 1, ("app", "worker"): 2}, R1, agents(("a", 2), ("b", 5)), before)
    assert p.place == {InstanceKey("app", "worker.2"): "b"}


def test_rule2_a_returning_agent_keeps_its_instance_only_if_it_has_room():
    views = agents(("a", 1), ("b", 5))
    p = plan({("app", "web"): 2}, R1, views, on("a", web(1)), running_on={web(2): "a"})
    assert p.place == {web(2): "b"}


# ---- rule 3: running instances stay; scale-up only adds, scale-down only removes ---------------

def test_rule3_scale_up_only_adds_and_does_not_rebalance():
    before = on("a", web(1), web(2), web(3))
    desired = {("app", "web"): 5}
    p = plan(desired, R1, agents(("a", 10), ("b", 10)), before)
    assert p.place == {web(4): "b", web(5): "b"} and not p.stop and not p.update
    after = p.assignments_after(before, R1)
    assert all(after[k] == a for k, a in before.items())
    assert_running_plus_placed_minus_stopped_is_desired(p, before, desired)


def test_rule3_scale_down_removes_highest_numbers_first_and_keeps_the_rest_in_place():
    views = agents(("a", 100), ("b", 100))
    before = plan({("app", "web"): 10}, R1, views, {}).assignments_after({}, R1)
    desired = {("app", "web"): 2}
    p = plan(desired, R1, views, before)
    assert sorted(p.stop) == sorted(web(n) for n in range(3, 11))
    assert not p.place and not p.migrate and not p.update
    after = p.assignments_after(before, R1)
    assert after == {k: a for k, a in before.items() if k in (web(1), web(2))}
    assert_running_plus_placed_minus_stopped_is_desired(p, before, desired)


def test_rule3_scale_down_keeps_low_numbers_even_if_that_leaves_the_spread_uneven():
    before = {**on("a", web(1), web(2)), **on("b", web(3), web(4))}
    p = plan({("app", "web"): 2}, R1, agents(("a", 10), ("b", 10)), before)
    assert sorted(p.stop) == [web(3), web(4)] and not p.place and not p.migrate


def test_rule3_instances_no_longer_wanted_are_stopped_wherever_they_are():
    other = InstanceKey("other", "web.1")
    views = {"a": AgentView("a", 10), "b": down("b"), "c": draining("c")}
    before = {**on("a", web(1)), **on("b", web(2)), **on("c", web(3)), **on("gone", other)}
    p = plan({("app", "web"): 0}, R1, views, before)
    assert sorted(p.stop) == sorted(before) and not p.unassign and not p.pending
    assert p.assignments_after(before, R1) == {}


# ---- rule 4: spread; tie-breaks: fewest of its type, then least loaded, then first by name -----

def test_rule4_fresh_placement_spreads_every_type_within_capacity():
    caps = {"a": 1, "b": 4, "c": 6, "d": 6}
    desired = {("app", "web"): 6, ("app", "worker"): 5}
    p = plan(desired, R1, agents(*caps.items()), {})
    after = p.assignments_after({}, R1)
    assert not p.pending
    for name, n in per_agent(after).items():
        assert n <= caps[name]
    assert per_agent(after, "web") == {"a": 1, "b": 2, "c": 2, "d": 1}
    # a is full; d, the least loaded, gets the first worker and, still least loaded with one
    # each, the fourth; the fifth goes to b, first by name.
    assert per_agent(after, "worker") == {"b": 2, "c": 1, "d": 2}


def test_rule4_fewest_of_its_type_wins_over_least_loaded():
    workers = {InstanceKey("app", f"worker.{n}"): Assigned("a", 1) for n in range(1, 4)}
    before = {**workers, **on("b", web(1))}  # a: 0 web, load 3; b: 1 web, load 1
    p = plan({("app", "web"): 2, ("app", "worker"): 3}, R1, agents(("a", 10), ("b", 10)),
             before)
    assert p.place == {web(2): "a"}


def test_rule4_least_loaded_breaks_a_tie_in_type_count():
    before = {InstanceKey("app", "worker.1"): Assigned("a", 1),
              InstanceKey("app", "worker.2"): Assigned("a", 1),
              InstanceKey("app", "worker.3"): Assigned("b", 1)}  # a: load 2, b: load 1
    p = plan({("app", "web"): 1, ("app", "worker"): 3}, R1, agents(("a", 10), ("b", 10)),
             before)
    assert p.place == {web(1): "b"}


def test_rule4_first_by_name_breaks_a_full_tie_whatever_the_input_order():
    views = {n: AgentView(n, 10) for n in ("c", "a", "b")}
    p = plan({("app", "web"): 1}, R1, views, {})
    assert p.place == {web(1): "a"}
    p = plan({("app", "web"): 5}, R1, views, {})
    assert [p.place[web(n)] for n in range(1, 6)] == ["a", "b", "c", "a", "b"]


def test_rule4_an_instance_kept_where_it_runs_counts_for_the_spread():
    before = {InstanceKey("app", "worker.1"): Assigned("b", 1)}
    p = plan({("app", "web"): 2, ("app", "worker"): 1}, R1, agents(("a", 10), ("b", 10)), before,
             running_on={web(1): "a"})
    assert p.place == {web(1): "a", web(2): "b"}  # a has a web now, b none


# ---- rule 5: deterministic; what cannot be placed is pending -----------------------------------

def test_rule5_the_plan_does_not_depend_on_the_order_of_its_inputs():
    views = {"a": AgentView("a", 3), "b": AgentView("b", 2), "c": down("c"), "d": draining("d")}
    before = {**on("c", web(1), web(9)), **on("d", web(2)), **on("a", web(7), release=0),
              InstanceKey("other", "clock.1"): Assigned("b", 1)}
    desired = {("app", "web"): 8, ("app", "clock"): 2}
    releases = {"app": 1}
    p = plan(desired, releases, views, before, running_on={web(3): "b"})
    flipped = plan(dict(reversed(desired.items())), dict(releases),
                   dict(reversed(views.items())), dict(reversed(before.items())),
                   running_on={web(3): "b"})
    assert flipped == p
    assert p.stop == sorted(p.stop)  # a stable order for the writes and the log


def test_rule5_pending_is_reported_when_nothing_fits():
    p = plan({("app", "web"): 3}, R1, agents(("a", 1)), {})
    assert p.place == {web(1): "a"} and p.pending == [web(2), web(3)]
    assert not p.unassign  # never assigned, nothing to remove


# ---- down agents: migrate -----------------------------------------------------------------------

def test_instances_of_a_down_agent_migrate_with_their_ids_and_the_current_release():
    views = {"a": down("a"), "b": AgentView("b", 10)}
    before = {**on("a", web(1), release=1), **on("gone", web(2), release=1)}
    p = plan({("app", "web"): 2}, {"app": 2}, views, before)
    assert p.migrate == {web(1): "b", web(2): "b"} and not p.place and not p.handoff
    assert p.assignments_after(before, {"app": 2}) == on("b", web(1), web(2), release=2)


def test_a_lost_instance_with_nowhere_to_go_is_unassigned_and_pending():
    views = {"a": down("a"), "b": AgentView("b", 1)}
    before = {**on("a", web(1), web(2))}
    p = plan({("app", "web"): 2}, R1, views, before)
    assert p.migrate == {web(1): "b"}
    assert p.unassign == [web(2)] and p.pending == [web(2)]


def test_a_lost_instance_running_on_an_agent_that_came_back_migrates_there():
    views = {"a": down("a"), "b": AgentView("b", 10), "c": AgentView("c", 10)}
    p = plan({("app", "web"): 1}, R1, views, on("a", web(1)), running_on={web(1): "c"})
    assert p.migrate == {web(1): "c"}


# ---- draining agents: handoff, or eviction for at_most_once types -------------------------------

def test_drain_hands_off_to_a_ready_agent_and_the_old_copy_runs_until_then():
    views = {"a": draining("a"), "b": AgentView("b", 10)}
    before = on("a", web(1), release=1)
    p = plan({("app", "web"): 1}, {"app": 2}, views, before, running_on={web(1): "a"})
    assert p.migrate == {web(1): "b"} and p.handoff == {web(1): "a"}
    assert not p.unassign and not p.pending and not p.update
    assert p.assignments_after(before, {"app": 2}) == {
        web(1): Assigned("b", 2, previous="a", previous_release=1)}  # a keeps its v1 copy


def test_drain_with_nowhere_to_go_leaves_the_instance_where_it_is():
    views = {"a": draining("a"), "b": AgentView("b", 0)}
    p = plan({("app", "web"): 1}, R1, views, on("a", web(1)))
    assert p.empty() and not p.handoff and not p.pending


def test_drain_evicts_at_most_once_types_and_places_them_only_once_the_old_copy_is_gone():
    clock = InstanceKey("app", "clock.1")
    desired, once = {("app", "web"): 1, ("app", "clock"): 1}, {("app", "clock")}
    views = {"a": draining("a"), "b": AgentView("b", 10)}
    before = {**on("a", web(1)), clock: Assigned("a", 1)}
    p = plan(desired, R1, views, before, at_most_once=once)
    assert p.unassign == [clock] and p.pending == [clock]
    assert clock not in p.migrate and clock not in p.handoff and clock not in p.place
    after = p.assignments_after(before, R1)
    assert after[web(1)] == Assigned("b", 1, previous="a") and clock not in after
    # Next round, while agent a still runs the old clock.1, it is not placed, not even on the
    # agent the report says it runs on...
    for running_on in ({}, {clock: "b"}):
        again = plan(desired, R1, views, after, at_most_once=once, blocked={clock},
                     running_on=running_on)
        assert again.pending == [clock] and again.empty()
    # ...and once it is gone, it is.
    last = plan(desired, R1, views, after, at_most_once=once)
    assert last.place == {clock: "b"} and not last.pending


def test_blocked_only_holds_back_the_blocked_instances():
    p = plan({("app", "web"): 3}, R1, agents(("a", 10)), {}, blocked={web(2)})
    assert p.place == {web(1): "a", web(3): "a"} and p.pending == [web(2)]


# ---- releases --------------------------------------------------------------------------------

def test_a_new_release_updates_old_instances_in_place_and_leaves_current_ones_alone():
    before = {**on("a", web(1), release=1), **on("b", web(2), release=2)}
    p = plan({("app", "web"): 2}, {"app": 2}, agents(("a", 10), ("b", 10)), before)
    assert p.update == {web(1): 2}
    assert not p.place and not p.migrate and not p.stop
    assert p.assignments_after(before, {"app": 2}) == on("a", web(1), release=2) | \
        on("b", web(2), release=2)


def test_an_old_release_on_a_disconnected_agent_is_updated_in_place():
    before = on("a", web(1), release=1)
    p = plan({("app", "web"): 1}, {"app": 2}, {"a": disconnected("a")}, before)
    assert p.update == {web(1): 2} and not p.migrate


def test_apps_without_a_release_are_not_placed():
    p = plan({("app", "web"): 3}, {}, agents(("a", 10)), {})
    assert p.empty() and not p.pending


# ---- sticky: an agent that still runs an instance keeps it, if it may --------------------------

def test_sticky_an_agent_that_came_back_keeps_what_it_runs_even_against_the_spread():
    before = on("c", web(2), web(3))  # c has the most web; the spread alone would avoid it
    p = plan({("app", "web"): 3}, R1, agents(("a", 10), ("b", 10), ("c", 10)), before,
             running_on={web(1): "c"})
    assert p.place == {web(1): "c"}


def test_sticky_an_agent_filled_by_an_instance_it_kept_receives_no_more():
    views = agents(("a", 1), ("b", 10))
    p = plan({("app", "web"): 3}, R1, views, {}, running_on={web(1): "a"})
    assert p.place == {web(1): "a", web(2): "b", web(3): "b"}


def test_sticky_does_not_apply_to_a_handoff_which_spreads_as_usual():
    # running_on is for instances without a live home; one on a draining agent is handed off
    # by the spread rule, whatever else reports it.
    views = {"a": AgentView("a", 10), "b": AgentView("b", 10), "d": draining("d")}
    p = plan({("app", "web"): 1}, R1, views, on("d", web(1)), running_on={web(1): "b"})
    assert p.migrate == {web(1): "a"} and p.handoff == {web(1): "d"}


def test_sticky_is_ignored_for_an_agent_that_is_full_or_not_ready():
    views = {"a": AgentView("a", 10), "full": AgentView("full", 1), "d": draining("d"),
             "x": disconnected("x")}
    before = on("full", InstanceKey("app", "web.9"))
    p = plan({("app", "web"): 9}, R1, views, before,
             running_on={web(1): "full", web(2): "d", web(3): "x", web(4): "nobody"})
    assert set(p.place.values()) == {"a"} and len(p.place) == 8


# ---- properties ---------------------------------------------------------------------------------

APPS, TYPES = ["app", "other"], ["web", "worker", "clock"]
MODES = ["ready", "ready", "ready", "draining", "draining", "disconnected", "down"]  # weighted
names = st.sampled_from([f"agent-{i}" for i in range(6)])
agent_views = st.dictionaries(
    names, st.tuples(st.integers(0, 10), st.sampled_from(MODES)), min_size=1, max_size=6).map(
    lambda d: {n: AgentView(n, cap, alive=mode != "down", schedulable=mode == "ready",
                            draining=mode == "draining")
               for n, (cap, mode) in d.items()})
desired_counts = st.dictionaries(st.tuples(st.sampled_from(APPS), st.sampled_from(TYPES)),
                                 st.integers(0, 6), max_size=5)


@st.composite
def worlds(draw, spare: bool = False):
    """A cluster, its formation and its assignments; `spare`: with a ready agent that has room
    and an instance without a home that is blocked."""
    views = draw(agent_views)
    if spare:
        views["agent-spare"] = AgentView("agent-spare", draw(st.integers(21, 30)))
    # At least one type of an app with a release is wanted; the others may be scaled to zero.
    desired = {**draw(desired_counts),
               ("app", draw(st.sampled_from(TYPES))): draw(st.integers(1, 6))}
    releases = draw(st.sampled_from([{"app": 2, "other": 1}, {"app": 2}, {"app": 1, "other": 2}]))
    once = draw(st.sets(st.sampled_from([("app", "web"), ("other", "worker"), ("app", "clock")]),
                        max_size=1))
    wanted = wanted_instances({k: v for k, v in desired.items() if k[0] in releases})
    # Existing assignments: mostly wanted instances, some unwanted (scale-down), on any agent
    # (ready, draining, disconnected, down or unknown), on the current release or an old one.
    unwanted = st.builds(lambda a, t, n: InstanceKey(a, f"{t}.{n}"), st.sampled_from(APPS),
                         st.sampled_from(TYPES), st.integers(1, 12))
    keys = draw(st.lists(st.one_of(st.sampled_from(wanted), st.sampled_from(wanted), unwanted),
                         max_size=20, unique=True))
    where = st.sampled_from(sorted(views) + ["gone"])
    assignments = {key: Assigned(draw(where), draw(st.integers(1, 2))) for key in keys}
    # Existing assignments on live agents respect capacity, as they would in a real cluster.
    load: Counter = Counter()
    for key in sorted(assignments):
        agent = views.get(assignments[key].agent)
        if agent is not None and agent.alive:
            if load[agent.name] >= agent.capacity:
                del assignments[key]
                continue
            load[agent.name] += 1
    # Blocked: mostly wanted instances without a home (the case the rule is about), and some
    # of any kind (assigned, unwanted), which must not change anything.
    homeless = [k for k in wanted if k not in assignments]
    pool = sorted(set(wanted) | set(assignments))
    blocked = set(draw(st.lists(st.sampled_from(homeless), min_size=int(spare), max_size=3))) \
        if homeless else set()
    blocked |= set(draw(st.lists(st.sampled_from(pool), max_size=2))) if pool else set()
    # Reports of instances running somewhere: on any known agent, or on one placement never saw.
    running_on = draw(st.dictionaries(st.sampled_from(wanted),
                                      st.sampled_from(sorted(views) + ["agent-unknown"]),
                                      max_size=6))
    return desired, releases, views, assignments, once, blocked, running_on


def model_homes(desired, releases, views, before, once, blocked, running_on):
    """Rules 1, 2 and 4 and the sticky rule the slow, obvious way: for each instance that needs a
    home, in order, where it goes (None: nowhere). Every other instance stays or is removed."""
    wanted = wanted_instances({k: v for k, v in desired.items() if k[0] in releases})
    ready = {n: v for n, v in views.items() if v.schedulable}
    load: Counter[str] = Counter()
    of_type: Counter[tuple[str, str, str]] = Counter()
    for key, a in before.items():
        if key in wanted and a.agent in ready:
            load[a.agent] += 1
            of_type[key.app, key.type, a.agent] += 1
    homes: dict[InstanceKey, str | None] = {}
    for key in wanted:
        a = before.get(key)
        live = a is not None and a.agent in views and views[a.agent].alive
        if (live and not views[a.agent].draining) or (a is None and key in blocked):
            continue  # stays, or waits for its old copy to go
        if live and (key.app, key.type) in once:
            continue  # evicted off a draining agent
        fits = sorted(n for n in ready if load[n] < ready[n].capacity)
        if not live and running_on.get(key) in fits:
            home = running_on[key]
        else:
            home = min(fits, key=lambda n: (of_type[key.app, key.type, n], load[n], n),
                       default=None)
        homes[key] = home
        if home is not None:
            load[home] += 1
            of_type[key.app, key.type, home] += 1
    return homes


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_properties_of_every_plan(world):
    desired, releases, views, before, once, blocked, running_on = world
    p = plan(desired, releases, views, before, once, blocked, running_on)
    after = p.assignments_after(before, releases)
    wanted = set(wanted_instances({k: v for k, v in desired.items() if k[0] in releases}))
    live = {k for k, a in before.items() if a.agent in views and views[a.agent].alive}
    for bucket in ("place", "migrate", "update", "stop", "unassign", "pending", "handoff"):
        if getattr(p, bucket):
            event(f"plan has {bucket}")  # see --hypothesis-show-statistics

    # Running + placed - stopped == desired: every wanted instance is assigned or pending.
    assert set(after) | set(p.pending) == wanted
    assert not set(after) & set(p.pending)
    assert len(p.pending) == len(set(p.pending))
    assert len(before) + len(p.place) - len(p.stop) - len(p.unassign) == len(after)
    if not p.pending:
        assert len(after) == len(wanted)
    # The buckets: place is for new instances, migrate/unassign/update/stop for assigned ones.
    assert not set(p.place) & set(before)
    assert set(p.migrate) | set(p.unassign) | set(p.update) | set(p.stop) <= set(before)
    assert set(p.handoff) <= set(p.migrate)
    # Rule 1: new homes only on ready agents.
    for agent in (*p.place.values(), *p.migrate.values()):
        assert views[agent].schedulable
    # Rule 2: no live agent over capacity.
    for agent, n in per_agent(after).items():
        assert agent not in views or not views[agent].alive or n <= views[agent].capacity
    # Rule 3: wanted instances on live agents stay (draining: handed off or evicted);
    # unwanted ones are stopped; an old release is updated where it is.
    for key, a in before.items():
        if key not in wanted:
            assert key in p.stop and key not in after
        elif key in live and not views[a.agent].draining:
            assert after[key].agent == a.agent and key not in p.migrate
            assert (key in p.update) == (a.release != releases[key.app])
            if key in p.update:
                assert after[key].release == releases[key.app]
        elif key in live and (key.app, key.type) in once:
            assert key in p.unassign and key in p.pending and key not in after
        elif key in live:
            assert after[key] == a or after[key].previous == a.agent  # handed off
    assert set(p.stop) == set(before) - wanted
    # Blocked instances that had no home get none.
    for key in blocked - set(before):
        if key in wanted:
            assert key not in after and key in p.pending
    # Rules 2, 4 and sticky: every homeless instance goes where the obvious model puts it.
    for key, home in model_homes(desired, releases, views, before, once, blocked,
                                 running_on).items():
        if home is None and key in live:  # draining, nowhere to go: stays
            assert key not in p.migrate and key not in p.handoff and after[key] == before[key]
        elif home is None:
            assert key in p.pending and (key in p.unassign) == (key in before)
        elif key in before:
            assert p.migrate[key] == home
            assert p.handoff.get(key) == (before[key].agent if key in live else None)
        else:
            assert p.place[key] == home
    # Rule 5: deterministic, whatever the order of the inputs.
    flipped = plan(dict(reversed(desired.items())), releases, dict(reversed(views.items())),
                   dict(reversed(before.items())), once, blocked, running_on)
    assert flipped == p


def test_blocked_instances_without_a_home_are_never_placed():
    seen: Counter = Counter()

    @settings(max_examples=150, deadline=None)
    @given(worlds(spare=True))
    def check(world):
        desired, releases, views, before, once, blocked, running_on = world
        p = plan(desired, releases, views, before, once, blocked, running_on)
        after = p.assignments_after(before, releases)
        wanted = set(wanted_instances({k: v for k, v in desired.items() if k[0] in releases}))
        waiting = (blocked & wanted) - set(before)
        used = per_agent(before)
        room = any(v.schedulable and used[v.name] < v.capacity for v in views.values())
        seen["examples"] += 1
        if waiting and room:
            event("a blocked, wanted, unassigned instance with a ready agent about")
            seen["interesting"] += 1
        for key in waiting:
            assert key not in after and key in p.pending
        # Blocking is no reason to hold anything else back.
        unblocked = plan(desired, releases, views, before, once, frozenset(), running_on)
        assert set(unblocked.pending) >= set(p.pending) - waiting

    check()
    assert seen["interesting"] >= seen["examples"] // 2, seen  # the rule was really exercised


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=6),
       st.dictionaries(st.sampled_from(TYPES), st.integers(0, 25), min_size=1))
def test_rule4_each_type_spreads_within_one_across_ready_agents_where_capacity_allows(caps,
                                                                                      counts):
    views = {f"a{i}": AgentView(f"a{i}", c) for i, c in enumerate(caps)}
    views["down"] = down("down", 50)
    views["draining"] = draining("draining", 50)
    desired = {("app", t): n for t, n in counts.items()}
    p = plan(desired, R1, views, {})
    after = p.assignments_after({}, R1)
    load = per_agent(after)
    assert not load["down"] and not load["draining"]
    for name, n in load.items():
        assert n <= views[name].capacity  # every agent, not just the total
    free = sum(c for c in caps) - sum(desired.values())
    assert len(p.pending) == max(0, -free)
    for ptype in counts:
        of_type = per_agent(after, ptype)
        top = max(of_type.values(), default=0)
        for name in views:
            if name.startswith("a") and of_type[name] < top - 1:
                assert load[name] == views[name].capacity  # behind only because it is full
