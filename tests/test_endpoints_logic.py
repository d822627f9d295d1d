"""Deregistration before stop, as pure logic (scheduler/endpoints.py): no I/O, no clock."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.endpoints import (
    GHOST_TTL,
    MAX_OTHER_WATCHERS,
    MAX_WATCHERS,
    Endpoints,
    Ep,
    Watcher,
    found,
)
from scheduler.placement import InstanceKey

WEB1, WEB2 = InstanceKey("shop", "web.1"), InstanceKey("shop", "web.2")
C1, C2 = ("a1", WEB1, 1, 0), ("a2", WEB2, 1, 0)


def ep(copy, port=5000) -> Ep:
    agent, key, release, generation = copy
    return Ep(key.app, key.type, key.id, agent, "10.0.0.1", port, release, generation)


def timeout(app: str, ptype: str, release: int) -> float:
    return 2.0


def watcher(acknowledges=True, app="shop", ptype="web") -> tuple[Watcher, list[int]]:
    woken: list[int] = []
    return Watcher(app, ptype, "lb", acknowledges, lambda: woken.append(1)), woken


def started(*copies, acknowledges=True) -> tuple[Endpoints, Watcher]:
    e, (w, _) = Endpoints(), watcher(acknowledges)
    e.watch(w)
    e.publish({c: ep(c) for c in copies}, 0.0, timeout)
    due = e.take(w)
    assert due is not None
    e.ack(w, due[0])
    return e, w


def test_a_watcher_is_given_the_whole_set_once_there_is_one():
    e, (w, woken) = Endpoints(), watcher()
    e.watch(w)
    assert e.take(w) is None and not woken  # nothing computed yet: nothing to say
    e.publish({C1: ep(C1)}, 0.0, timeout)
    assert woken and e.take(w) == (1, frozenset({ep(C1)}))
    assert e.take(w) is None


def test_an_empty_first_set_is_still_given():
    e, (w, _) = Endpoints(), watcher()
    e.watch(w)
    e.publish({}, 0.0, timeout)
    assert e.take(w) == (1, frozenset())


def test_only_the_newest_set_is_due_to_a_slow_watcher():
    e, (w, _) = Endpoints(), watcher()
    e.watch(w)
    e.publish({C1: ep(C1)}, 0.0, timeout)
    e.publish({C1: ep(C1), C2: ep(C2)}, 0.1, timeout)
    assert e.take(w) == (2, frozenset({ep(C1), ep(C2)}))


def test_a_watcher_of_another_type_is_not_woken_or_waited_for():
    e, (w, woken) = Endpoints(), watcher(ptype="api")
    e.watch(w)
    e.publish({C1: ep(C1)}, 0.0, timeout)
    e.take(w)
    woken.clear()
    e.publish({C2: ep(C2)}, 0.1, timeout)  # web.1 left: nothing for the api watcher
    assert not woken and e.take(w) is None
    assert not e.holds(C1, 0.2)


def test_a_copy_that_left_is_held_until_acknowledged():
    e, w = started(C1, C2)
    e.publish({C2: ep(C2)}, 1.0, timeout)
    assert e.holds(C1, 1.1) and e.kept() == {"a1": [(WEB1, 1, 0)]}
    due = e.take(w)
    assert due is not None and due[1] == frozenset({ep(C2)})
    assert e.ack(w, due[0])
    released = e.settle(1.2)
    assert len(released) == 1 and not released[0].timed_out
    assert abs(released[0].waited - 0.2) < 1e-9
    assert e.kept() == {} and not e.holds(C1, 1.2)


def test_a_copy_is_held_no_longer_than_its_deregister_timeout():
    e, w = started(C1, C2)
    e.publish({C2: ep(C2)}, 1.0, timeout)
    assert e.holds(C1, 2.9) and e.next_deadline() == 3.0
    assert not e.holds(C1, 3.0)
    assert [r.timed_out for r in e.settle(3.0)] == [True]


def test_a_watcher_that_does_not_acknowledge_holds_nothing():
    e, _ = started(C1, C2, acknowledges=False)
    e.publish({C2: ep(C2)}, 1.0, timeout)
    assert not e.holds(C1, 1.0)


def test_a_watcher_that_never_saw_the_copy_holds_nothing():
    e, w = started(C1, C2)
    late, _ = watcher()
    e.publish({C2: ep(C2)}, 1.0, timeout)
    e.watch(late)
    assert e.take(late) == (2, frozenset({ep(C2)}))  # its first set is already without it
    assert e.holds(C1, 1.1)  # w saw it and has not applied version 2; `late` is not waited for
    e.take(w)
    e.ack(w, 2)
    assert not e.holds(C1, 1.1)


def test_a_load_balancer_that_went_away_holds_as_a_ghost_until_it_is_back():
    """Its HAProxy still balances to what it was last given: while it reconnects, a copy
    that leaves still waits for it (until the deadline), and once it acknowledges a whole set
    on a new stream, its ghost holds nothing more."""
    e, w = started(C1, C2)
    e.unwatch(next(iter(e.watchers)), 0.5)
    e.publish({C2: ep(C2)}, 1.0, timeout)
    assert e.holds(C1, 1.0) and e.active()
    back, _ = watcher()  # the same name ("lb") on a new stream
    e.watch(back)
    due = e.take(back)
    assert due is not None and due[1] == frozenset({ep(C2)})
    assert e.holds(C1, 1.1)  # not yet applied
    e.ack(back, due[0])
    assert not e.holds(C1, 1.1) and not e.ghosts


def test_a_ghost_is_forgotten_after_its_ttl():
    e, w = started(C1, C2)
    e.unwatch(next(iter(e.watchers)), 0.0)
    e.settle(GHOST_TTL - 0.1)
    assert e.ghosts
    e.settle(GHOST_TTL)
    assert not e.ghosts and not e.active()


def test_a_watcher_that_does_not_acknowledge_leaves_no_ghost():
    e, w = started(C1, C2, acknowledges=False)
    e.unwatch(next(iter(e.watchers)), 0.0)
    assert not e.ghosts


def test_with_nobody_watching_the_set_is_forgotten():
    """A watcher that comes later must be given a fresh set, not one from before it."""
    e, w = started(C1, C2)
    e.unwatch(next(iter(e.watchers)), 0.0)
    e.settle(GHOST_TTL)
    e.idle()
    late, _ = watcher()
    e.watch(late)
    assert e.take(late) is None  # nothing until the next pass computes the set
    e.publish({C2: ep(C2)}, GHOST_TTL + 1, timeout)
    due = e.take(late)
    assert due is not None and due[1] == frozenset({ep(C2)}) and e.leaving == {}


def test_a_type_that_does_not_change_keeps_its_set_object():
    api = ("a1", InstanceKey("shop", "api.1"), 1, 0)
    e, w = started(C1, api)
    e.publish({C1: ep(C1), C2: ep(C2), api: ep(api)}, 1.0, timeout)
    e.publish({C1: ep(C1), api: ep(api)}, 2.0, timeout)
    before = e.groups[("shop", "api")]
    e.publish({C1: ep(C1), C2: ep(C2), api: ep(api)}, 3.0, timeout)
    assert e.groups[("shop", "api")] is before


def test_a_copy_healthy_again_before_its_stop_is_no_longer_leaving():
    e, w = started(C1, C2)
    e.publish({C2: ep(C2)}, 1.0, timeout)
    e.publish({C1: ep(C1), C2: ep(C2)}, 1.1, timeout)
    assert e.leaving == {} and e.kept() == {}


def test_an_ack_of_a_version_never_given_is_refused():
    e, w = started(C1)
    assert not e.ack(w, 2) and not e.ack(w, 0) and not e.ack(w, -1)
    assert e.ack(w, 1) and w.acked == 1
    assert e.ack(w, 1)  # again: harmless
    e.publish({}, 1.0, timeout)
    assert not e.ack(w, 2)  # due, not yet taken: not given


def test_an_older_ack_does_not_undo_a_newer_one():
    e, w = started(C1)
    e.publish({}, 1.0, timeout)
    e.take(w)
    e.ack(w, 2)
    e.ack(w, 1)
    assert w.acked == 2


def test_watchers_are_bounded_and_viewers_cannot_take_a_load_balancers_place():
    e = Endpoints()
    ids = [e.watch(watcher()[0]) for _ in range(MAX_WATCHERS)]
    assert None not in ids and e.watch(watcher()[0]) is None
    others = [e.watch(watcher(acknowledges=False)[0]) for _ in range(MAX_OTHER_WATCHERS)]
    assert None not in others and e.watch(watcher(acknowledges=False)[0]) is None
    e.unwatch(ids[0] or 0, 0.0)
    assert e.watch(watcher()[0]) is not None


def test_nothing_is_active_without_watchers_or_held_copies():
    e = Endpoints()
    assert not e.active()
    e.watch(watcher()[0])
    assert e.active()


def test_found_skips_release_runs_and_copies_without_port():
    run = InstanceKey("shop", "release.3")
    lists = {"a1": [(WEB1, 1, 0), (run, 3, 0)], "a2": [(WEB2, 1, 0)]}
    got = found(lists, lambda a: f"host-{a}",
                lambda agent, key, r, g: 0 if key == WEB2 else 7000)
    assert got == {C1: Ep("shop", "web", "web.1", "a1", "host-a1", 7000, 1, 0)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sets(st.integers(0, 5)), st.floats(0, 1), st.booleans()),
                min_size=1, max_size=12))
def test_no_copy_is_let_go_before_every_watcher_that_saw_it_applied_a_set_without_it(steps):
    """Whatever the sets and the acks, a copy that left stops being held only once the
    watcher has acknowledged a version without it, or its deadline has passed."""
    copies = [("a1", InstanceKey("shop", f"web.{i}"), 1, 0) for i in range(6)]
    e, (w, _) = Endpoints(), watcher()
    e.watch(w)
    now = 0.0
    seen: set = set()  # copies in a set the watcher was given
    for members, dt, acks in steps:
        now += dt
        e.publish({copies[i]: ep(copies[i]) for i in members}, now, timeout)
        due = e.take(w)
        if due is not None:
            seen |= {c for c in copies if ep(c) in due[1]}
            if acks:
                e.ack(w, due[0])
        for c in seen:
            left = e.leaving.get(c)
            if left is not None and w.acked < left.version and now < left.deadline:
                assert e.holds(c, now)
        e.settle(now)


def test_with_two_load_balancers_a_copy_is_held_until_both_let_go():
    e, w1 = started(C1, C2)
    w2, _ = watcher()
    e.watch(w2)
    due = e.take(w2)
    assert due is not None
    e.ack(w2, due[0])
    e.publish({C2: ep(C2)}, 1.0, timeout)
    for w in (w1, w2):
        e.take(w)
    e.ack(w1, 2)
    assert e.holds(C1, 1.1)  # the second has not applied it yet
    e.ack(w2, 2)
    assert not e.holds(C1, 1.1)
