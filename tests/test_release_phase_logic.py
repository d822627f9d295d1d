"""The release phase's pure decisions (docs/releases.md, scheduler/releasephase.py): one pass
of releasephase.drive in each case, strays, the release an app serves meanwhile, rollouts.begin
and release_status, placement's view of a `release.N` run, and the release's new fields. No
I/O, no processes: a World built by hand, reports put on its agents as a session would."""
from __future__ import annotations

import json
import math
from dataclasses import replace

from common.appdef import DEFAULT_STOP_TIMEOUT, ProcessType, Release
from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler import releasephase, releases, rollouts
from scheduler.agents import AgentEntry, AgentTable, Session
from scheduler.placement import AgentView, Assigned, InstanceKey, plan
from scheduler.push import LinkTimes, push
from scheduler.records import (
    FAILED,
    FINISHED,
    RELEASING,
    ROLLING,
    SUPERSEDED,
    AgentRecord,
    Rollout,
)
from scheduler.world import Apps, World

APP = "shop"
NOW = 1000.0
RUN = InstanceKey(APP, "release.3")  # the run of v3's release phase
TYPES = {"web": ProcessType("web", "python3 web.py")}


def release(version: int = 3, timeout: float = 60.0, command: str = "./migrate") -> Release:
    return Release(version, dict(TYPES), {"DB": "x"}, NOW, release_command=command,
                   release_timeout=timeout, run_release=bool(command))


def releasing(version: int = 3, **kw) -> Rollout:
    """v`version`'s rollout record while its release phase has not passed."""
    return Rollout(version, version - 1, RELEASING, started=NOW, released=False, **kw)


def world(*agents: tuple[str, int]) -> World:
    """Agents (name, capacity), each ready: connected, not draining, not down."""
    w = World(AgentTable(ttl=10.0))
    for name, capacity in agents:
        w.agents.entries[name] = AgentEntry(AgentRecord(name, capacity=capacity),
                                            deadline=math.inf, session=Session())
    return w


def assign(w: World, key: InstanceKey, agent: str, version: int = 3) -> None:
    w.assign({key: Assigned(agent, version)}, {key: 1})


def report(w: World, agent: str, key: InstanceKey, state: InstanceState, version: int = 3,
           reason: str = "") -> None:
    w.agents.entries[agent].put_report(pb.InstanceStatus(
        app=key.app, id=key.id, state=state, release=version, reason=reason), NOW)


def started(timeout: float = 60.0) -> tuple[World, Rollout, Release]:
    """v3's run assigned to n1 at NOW (not yet reported)."""
    w = world(("n1", 4))
    assign(w, RUN, "n1")
    return w, releasing(phase_started=NOW), release(timeout=timeout)


def overdue(timeout: float = 60.0) -> float:
    """A moment just past the deadline of a run of `timeout` assigned at NOW."""
    return NOW + timeout + DEFAULT_STOP_TIMEOUT + releasephase.OUTCOME_SLACK + 1


# ---- drive: assigning the run ---------------------------------------------------------------

def test_run_key_is_release_dot_version():
    assert releasephase.run_key(APP, 3) == RUN and RUN.type == "release"


def test_an_unassigned_run_goes_to_a_ready_agent_with_a_free_slot_and_stamps_the_start():
    w = world(("n1", 2))
    step = releasephase.drive(w, releasing(), release(), APP, NOW)
    assert step.changes == {RUN: Assigned("n1", 3)}
    assert step.started == "n1"
    assert step.record is not None and step.record.phase_started == NOW
    assert not step.passed and step.failed is None


def test_the_least_loaded_agent_runs_it_then_the_first_by_name():
    w = world(("a", 4), ("b", 4), ("c", 4))
    assign(w, InstanceKey(APP, "web.1"), "a", 2)
    assert releasephase.drive(w, releasing(), release(), APP, NOW).started == "b"


def test_full_and_draining_agents_are_passed_over():
    w = world(("full", 1), ("draining", 4), ("z", 4))
    assign(w, InstanceKey(APP, "web.1"), "full", 2)
    w.agents.entries["draining"].record.state = "draining"
    assert releasephase.drive(w, releasing(), release(), APP, NOW).started == "z"


def test_it_waits_while_an_agent_that_is_not_down_is_not_connected_either():
    # After a scheduler restart, before its hello, it may run a superseded run still.
    w = world(("n1", 4), ("n2", 4))
    w.agents.entries["n2"].session = None
    assert releasephase.drive(w, releasing(), release(), APP, NOW) == releasephase.Phase()
    w.agents.entries["n2"].down = True  # down: it fences what it runs; no longer waited on
    assert releasephase.drive(w, releasing(), release(), APP, NOW).started == "n1"


def test_it_waits_while_an_agent_was_sent_a_superseded_run_and_has_not_said_it_stopped():
    w = world(("n1", 4), ("n2", 4))
    session = w.agents.entries["n2"].session
    assert session is not None
    session.given.add(InstanceKey(APP, "release.2"))  # pushed, not reported yet
    assert releasephase.drive(w, releasing(), release(), APP, NOW) == releasephase.Phase()


def test_with_no_room_anywhere_it_waits_like_a_pending_instance():
    w = world(("n1", 1))
    assign(w, InstanceKey(APP, "web.1"), "n1", 2)
    step = releasephase.drive(w, releasing(), release(), APP, NOW)
    assert step == releasephase.Phase()


def test_it_waits_while_a_live_agent_still_reports_a_superseded_run_of_the_app():
    w = world(("n1", 4), ("n2", 4))
    report(w, "n2", InstanceKey(APP, "release.2"), InstanceState.RUNNING, 2)
    assert releasephase.drive(w, releasing(), release(), APP, NOW) == releasephase.Phase()


def test_a_down_agents_old_run_or_another_apps_run_does_not_hold_it_back():
    w = world(("n1", 4), ("n2", 4))
    report(w, "n2", InstanceKey(APP, "release.2"), InstanceState.RUNNING, 2)
    report(w, "n1", InstanceKey("other", "release.7"), InstanceState.RUNNING, 7)
    w.agents.entries["n2"].down = True
    assert releasephase.drive(w, releasing(), release(), APP, NOW).started == "n1"


def test_a_run_whose_assignment_never_landed_is_assigned_again():
    # phase_started is written first; an assignment write that failed was never sent.
    w = world(("n1", 4))
    step = releasephase.drive(w, releasing(phase_started=NOW), release(), APP, NOW + 1)
    assert step.failed is None and step.changes == {RUN: Assigned("n1", 3)}


def test_an_instance_of_a_legacy_type_named_release_is_a_stray_not_the_run():
    w = world(("n1", 4))
    assign(w, RUN, "n1", version=1)  # release.3 of an old `release` type, on v1
    w.apps.rollouts[APP] = releasing()
    assert releasephase.strays(w) == {RUN: None}
    assert releasephase.drive(w, releasing(), release(), APP, NOW) == releasephase.Phase()


# ---- drive: its outcome ---------------------------------------------------------------------

def test_succeeded_passes_and_drops_the_run():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.SUCCEEDED)
    step = releasephase.drive(w, record, rel, APP, NOW + 5)
    assert step.passed and step.failed is None
    assert step.changes == {RUN: None}
    assert step.record is not None and step.record.phase_seen


def test_failed_fails_with_the_agents_reason_and_drops_the_run():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.FAILED, reason="exited 1")
    step = releasephase.drive(w, record, rel, APP, NOW + 5)
    assert step.failed == "exited 1" and not step.passed
    assert step.changes == {RUN: None}


def test_failed_without_a_reason_still_says_it_failed():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.FAILED)
    assert releasephase.drive(w, record, rel, APP, NOW + 5).failed == "it failed"


def test_a_run_reported_running_is_seen_once_and_otherwise_waited_on():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.RUNNING)
    first = releasephase.drive(w, record, rel, APP, NOW + 5)
    assert first.record is not None and first.record.phase_seen
    assert not first.changes and first.failed is None and not first.passed
    again = releasephase.drive(w, first.record, rel, APP, NOW + 6)
    assert again == releasephase.Phase()


def test_its_agent_down_fails_it():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.RUNNING)
    w.agents.entries["n1"].down = True
    step = releasephase.drive(w, record, rel, APP, NOW + 5)
    assert step.failed == "agent n1 was lost while it ran"
    assert step.changes == {RUN: None}


def test_its_agent_forgotten_fails_it():
    w, record, rel = started()
    del w.agents.entries["n1"]
    assert releasephase.drive(w, record, rel, APP, NOW + 5).failed == \
        "agent n1 was lost while it ran"


def test_a_run_sent_to_an_earlier_session_and_not_reported_by_this_one_fails():
    w, record, rel = started()
    w.delivered.add(RUN)  # pushed to the agent's session before this one (push.py)
    step = releasephase.drive(w, record, rel, APP, NOW + 5)
    assert step.failed is not None and "came back without it" in step.failed
    assert step.changes == {RUN: None}


def test_a_run_sent_to_this_session_and_not_reported_yet_waits():
    w, record, rel = started()
    w.delivered.add(RUN)
    session = w.agents.entries["n1"].session
    assert session is not None
    session.given.add(RUN)
    assert releasephase.drive(w, record, rel, APP, NOW + 5) == releasephase.Phase()


def test_a_scheduler_that_recovers_an_assigned_run_counts_it_as_sent():
    w, _, _ = started()
    w.set_assignments(dict(w.assignments), dict(w.revisions))  # a re-read: nothing was sent
    assert w.delivered == set()
    w.set_assignments(dict(w.assignments), dict(w.revisions), recovered=True)
    assert w.delivered == {RUN}


def test_no_report_after_it_was_seen_while_disconnected_waits():
    w, record, rel = started()
    w.agents.entries["n1"].session = None  # its stream ended; not down yet
    assert releasephase.drive(w, replace(record, phase_seen=True), rel, APP, NOW + 5) == \
        releasephase.Phase()


def test_no_report_yet_waits_until_the_deadline_then_fails():
    w, record, rel = started()
    at = releasephase.deadline(record, rel)
    assert at == NOW + 60 + DEFAULT_STOP_TIMEOUT + releasephase.OUTCOME_SLACK
    assert releasephase.drive(w, record, rel, APP, at) == releasephase.Phase()
    step = releasephase.drive(w, record, rel, APP, overdue())
    assert step.failed is not None and step.failed.startswith("no outcome from agent n1 ")
    assert step.changes == {RUN: None}


def test_still_running_past_the_deadline_fails():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.RUNNING)
    step = releasephase.drive(w, record, rel, APP, overdue())
    assert step.failed is not None and "past its timeout" in step.failed
    assert step.changes == {RUN: None}


def test_an_outcome_reported_past_the_deadline_still_counts():
    w, record, rel = started()
    report(w, "n1", RUN, InstanceState.SUCCEEDED)
    assert releasephase.drive(w, record, rel, APP, overdue()).passed


def test_the_deadline_follows_the_releases_timeout():
    record = releasing(phase_started=NOW)
    assert releasephase.deadline(record, release(timeout=1)) < \
        releasephase.deadline(record, release(timeout=600))


# ---- strays -----------------------------------------------------------------------------------

def test_strays_keeps_only_the_run_a_releasing_rollout_waits_on():
    w = world(("n1", 8))
    for app, version in ((APP, 2), (APP, 3), ("done", 1), ("nobody", 1)):
        assign(w, InstanceKey(app, f"release.{version}"), "n1", version)
    assign(w, InstanceKey(APP, "web.1"), "n1", 2)
    w.apps.rollouts[APP] = releasing()
    w.apps.rollouts["done"] = Rollout(1, 0, ROLLING)
    assert releasephase.strays(w) == {InstanceKey(APP, "release.2"): None,
                                      InstanceKey("done", "release.1"): None,
                                      InstanceKey("nobody", "release.1"): None}


def test_no_release_runs_no_strays():
    w = world(("n1", 8))
    assign(w, InstanceKey(APP, "web.1"), "n1", 2)
    assert releasephase.strays(w) == {}


# ---- the release an app serves --------------------------------------------------------------

def apps(current: int, record: Rollout, versions: tuple[int, ...] = (2, 3)) -> Apps:
    return Apps(releases={APP: {v: release(v) for v in versions}}, current={APP: current},
                formation={(APP, "web"): 2}, rollouts={APP: record})


def test_while_its_release_phase_runs_the_app_serves_the_release_before():
    a = apps(3, releasing())
    a.releases[APP][3] = Release(3, {**TYPES, "worker": ProcessType("worker", "w")}, {}, NOW)
    a.formation[(APP, "worker")] = 1
    assert a.serving() == {APP: 2}
    assert a.desired() == {(APP, "web"): 2}  # v2's types: v3's worker waits


def test_a_first_deploy_whose_release_phase_failed_serves_nothing():
    record = Rollout(1, 0, FAILED, released=False, outcomes={1: FAILED})
    a = apps(1, record, versions=(1,))
    assert a.serving() == {}
    assert a.desired() == {} and a.at_most_once() == set()


def test_a_rolling_release_is_served():
    assert apps(3, Rollout(3, 2, ROLLING)).serving() == {APP: 3}


def test_a_previous_release_no_longer_kept_serves_nothing():
    assert apps(3, releasing(), versions=(3,)).serving() == {}


# ---- rollouts.begin and release_status ------------------------------------------------------

def test_begin_with_a_phase_is_releasing_and_not_released():
    record = rollouts.begin(Rollout(2, 1, FINISHED), 3, NOW, phase=True)
    assert (record.release, record.previous, record.status) == (3, 2, RELEASING)
    assert not record.released and record.phase_started == 0 and not record.phase_seen


def test_begin_without_a_phase_rolls_out_at_once():
    record = rollouts.begin(Rollout(2, 1, FINISHED), 3, NOW)
    assert record.status == ROLLING and record.released


def test_begin_over_an_unreleased_record_carries_its_previous_over():
    old = releasing(phase_started=NOW, phase_seen=True)  # v3 from v2, its phase running
    record = rollouts.begin(old, 4, NOW + 1, phase=True)
    assert record.previous == 2  # v3 never ran: v2 is what runs
    assert record.outcomes[3] == SUPERSEDED
    assert not record.released and record.phase_started == 0 and not record.phase_seen


def test_begin_over_a_failed_first_deploy_has_no_previous():
    old = Rollout(1, 0, FAILED, released=False, outcomes={1: FAILED})
    assert rollouts.begin(old, 2, NOW).previous == 0


def test_release_status_of_a_releasing_record_says_running_once_its_agent_said_so():
    assert rollouts.release_status(releasing(), 3, 3) == ("rolling out",
                                                           "release phase starting")
    assert rollouts.release_status(releasing(phase_seen=True), 3, 3) == \
        ("rolling out", "release phase running")
    assert rollouts.release_status(Rollout(3, 2, ROLLING), 3, 3) == ("rolling out", "")


# ---- placement --------------------------------------------------------------------------------

def test_placement_never_stops_a_release_run_and_counts_it_against_capacity():
    run = InstanceKey(APP, "release.3")
    p = plan({(APP, "web"): 1}, {APP: 2}, {"n1": AgentView("n1", 1)},
             {run: Assigned("n1", 3)})
    assert run not in p.stop and run not in p.unassign
    assert p.place == {} and p.pending == [InstanceKey(APP, "web.1")]


def test_placement_puts_the_instance_beside_a_release_run_where_there_is_room():
    run = InstanceKey(APP, "release.3")
    p = plan({(APP, "web"): 1}, {APP: 2},
             {"a": AgentView("a", 1), "b": AgentView("b", 1)}, {run: Assigned("a", 3)})
    assert p.place == {InstanceKey(APP, "web.1"): "b"} and not p.stop


def test_placement_leaves_a_release_run_of_an_app_with_nothing_wanted():
    run = InstanceKey(APP, "release.1")
    p = plan({}, {}, {"n1": AgentView("n1", 1, alive=False, schedulable=False)},
             {run: Assigned("n1", 1)})
    assert p.empty()


# ---- releases: which release runs its phase ---------------------------------------------------

def test_a_deploy_and_a_config_change_run_the_release_phase():
    deployed = releases.deployed(None, dict(TYPES), {}, "./migrate", 30.0)
    assert (deployed.release_command, deployed.release_timeout, deployed.run_release) == \
        ("./migrate", 30.0, True)
    changed = releases.configured(release(), {"DB": "y"}, [])
    assert changed is not None
    assert (changed.release_command, changed.release_timeout, changed.run_release) == \
        ("./migrate", 60.0, True)


def test_a_rollback_runs_the_release_phase_only_if_asked():
    target = release(2, timeout=45.0)
    plain = releases.rolled_back(target)
    assert not plain.run_release
    assert (plain.release_command, plain.release_timeout) == ("./migrate", 45.0)
    assert releases.rolled_back(target, run_release=True).run_release


def test_a_rollback_to_a_release_without_a_phase_never_runs_one():
    assert not releases.rolled_back(release(2, command=""), run_release=True).run_release


# ---- Release JSON -------------------------------------------------------------------------------

def test_release_json_round_trip_keeps_the_release_phase():
    r = release(timeout=12.5)
    assert Release.from_json(r.to_json()) == r
    raw = json.loads(r.to_json())
    assert (raw["release_command"], raw["release_timeout"], raw["run_release"]) == \
        ("./migrate", 12.5, True)


def test_a_release_json_from_before_the_release_phase_loads_with_defaults():
    raw = json.loads(release().to_json())
    for key in ("release_command", "release_timeout", "run_release"):
        del raw[key]
    old = Release.from_json(json.dumps(raw).encode())
    assert (old.release_command, old.release_timeout, old.run_release) == ("", 600.0, False)
    assert old.types == TYPES and old.env == {"DB": "x"}


def test_a_type_named_release_stored_before_the_release_phase_is_not_wanted():
    # Earlier releases could have one; now `release.N` is a release phase's run.
    web = ProcessType("web", "w")
    old = Release(1, {"web": web, "release": ProcessType("release", "m")}, {}, 0.0)
    apps = Apps(releases={"a": {1: old}}, current={"a": 1},
                formation={("a", "web"): 1, ("a", "release"): 1})
    assert apps.desired() == {("a", "web"): 1}


def sent(session: Session | None) -> list[pb.Assignment]:
    """The items of the list last queued on session."""
    assert session is not None
    message = session.outbox.get_nowait()
    assert message is not None
    return list(message.assignments.items)


def test_push_sends_a_run_once_and_never_to_a_later_session_that_does_not_run_it():
    w, _, _ = started()
    w.apps.releases[APP] = {3: release()}
    entry = w.agents.entries["n1"]
    times = LinkTimes(agent_ttl=10.0, fence_after=0)
    assert push(w, entry, times) and RUN in w.delivered  # the first session gets it
    assert [(a.id, a.oneshot, a.command, a.timeout) for a in sent(entry.session)] == [
        ("release.3", True, "./migrate", 60.0)]
    entry.session = Session()  # the agent came back (a new session), without the run
    assert push(w, entry, times)
    assert sent(entry.session) == []
    report(w, "n1", RUN, InstanceState.RUNNING)  # a session that runs it keeps it
    assert push(w, entry, times, force=True)
    assert [a.id for a in sent(entry.session)] == ["release.3"]


def test_a_legacy_release_type_is_read_as_the_release_phase():
    stored = json.dumps({"version": 2, "env": {}, "created": 1.0, "types": {
        "web": {"name": "web", "command": "w"},
        "release": {"name": "release", "command": "rake db:migrate"}}}).encode()
    old = Release.from_json(stored)
    assert set(old.types) == {"web"} and old.release_command == "rake db:migrate"
    assert not old.run_release
    content = releases.configured(old, {"A": "1"}, [])  # no longer refused
    assert content is not None and content.release_command == "rake db:migrate"


def test_a_release_superseded_during_its_phase_says_so_for_rollback():
    record = rollouts.begin(releasing(), 4, NOW, phase=True)
    assert rollouts.phase_unpassed(record, 3).startswith("release phase: superseded by v4")
    assert rollouts.phase_unpassed(record, 2) == ""
