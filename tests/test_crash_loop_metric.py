"""formation_type_crash_looping on the scheduler's /metrics (scheduler/metrics.py), read from a
scheduler built without I/O (an in-memory store, agents that are only hellos and reports): it is
World.crash_looping of each type with desired > 0 of each app's current release, 1 or 0."""
from __future__ import annotations

from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler.metrics import SchedulerCollector
from scheduler.placement import InstanceKey
from scheduler.reconciler import Scheduler
from scheduler.world import CRASH_LOOP
from tests.cluster import wait_for
from tests.test_reconciler import TYPES, make

NAME = "formation_type_crash_looping"


def gauge(s: Scheduler) -> dict[tuple[str, str], float]:
    """(app, type) -> the gauge's value, as a scrape would read it now."""
    family = next(m for m in SchedulerCollector(s).collect() if m.name == NAME)
    return {(x.labels["app"], x.labels["type"]): x.value for x in family.samples}


def report(s: Scheduler, agent: str, key: InstanceKey, state: InstanceState, restarts: int,
           release: int = 1) -> None:
    s.agent_status(agent, pb.InstanceStatus(app=key.app, id=key.id, state=state,
                                            release=release, pid=1, restarts=restarts))


def agrees(s: Scheduler) -> dict[tuple[str, str], float]:
    """The gauge, checked against World.crash_looping for every type it shows."""
    g = gauge(s)
    assert g == {k: float(s.world.crash_looping(*k)) for k in g}
    return g


async def two_webs_on_two_agents() -> tuple[Scheduler, dict[InstanceKey, str]]:
    """App a (web and worker) with web=2 placed one per agent (n1, n2), not reported yet."""
    s, _ = make()
    for name in ("n1", "n2"):
        await s.agent_hello(pb.Hello(name=name, capacity=10))
    await s.deploy("a", TYPES, {})
    await s.scale("a", {"web": 2})
    await s.reconcile()
    where = {k: w.agent for k, w in s.world.assignments.items() if k.type == "web"}
    assert len(where) == 2 and set(where.values()) == {"n1", "n2"}, where
    return s, where


async def test_the_gauge_is_1_only_while_every_copy_crash_loops_on_every_agent():
    s, where = await two_webs_on_two_agents()
    # Only types with desired > 0: worker (0) has no series; web, just placed, is not looping.
    assert agrees(s) == {("a", "web"): 0.0}
    (k1, a1), (k2, a2) = sorted(where.items())
    report(s, a1, k1, InstanceState.CRASHED, CRASH_LOOP)
    report(s, a2, k2, InstanceState.RUNNING, 0)
    assert agrees(s) == {("a", "web"): 0.0}  # one copy serves: an instance's own trouble
    report(s, a2, k2, InstanceState.CRASHED, CRASH_LOOP - 1)
    assert agrees(s) == {("a", "web"): 0.0}  # one unlucky crash too few
    report(s, a2, k2, InstanceState.STARTING, CRASH_LOOP)  # restarted once more, down still
    assert agrees(s) == {("a", "web"): 1.0}
    # It follows the world: a copy that comes up clears it, a new crash sets it again.
    report(s, a1, k1, InstanceState.RUNNING, CRASH_LOOP + 1)
    assert agrees(s) == {("a", "web"): 0.0}
    report(s, a1, k1, InstanceState.CRASHED, CRASH_LOOP + 2)
    assert agrees(s) == {("a", "web"): 1.0}
    # Scaled to 0, the type has no series at all (its series ends, and so does an alert).
    await s.scale("a", {"web": 0})
    assert agrees(s) == {}


async def test_each_app_and_type_is_its_own_series():
    s, where = await two_webs_on_two_agents()
    await s.deploy("b", TYPES, {})
    await s.scale("b", {"web": 1, "worker": 1})
    await s.reconcile()
    for key, agent in where.items():
        report(s, agent, key, InstanceState.CRASHED, CRASH_LOOP + 4)
    for key, w in s.world.assignments.items():
        if key.app == "b":
            report(s, w.agent, key, InstanceState.CRASHED if key.type == "worker"
                   else InstanceState.RUNNING, CRASH_LOOP)
    assert agrees(s) == {("a", "web"): 1.0, ("b", "web"): 0.0, ("b", "worker"): 1.0}


def test_the_scheduler_serves_it_for_a_web_that_exits_at_once(make_cluster, tmp_path):
    """End to end: a real cluster's /metrics, web=2 (one per agent) exiting at once."""
    (tmp_path / "Procfile").write_text("web: sh -c 'echo broken; exit 3'\n")
    (tmp_path / "formation.toml").write_text("[web.deploy]\nauto_revert = false\n")
    c = make_cluster(agents=2, workdir=str(tmp_path))
    c.ctl("deploy", str(tmp_path / "Procfile"))
    c.ctl("scale", "web=2")
    series = 'formation_type_crash_looping{app="default",type="web"}'
    wait_for(lambda: c.scrape("scheduler").get(series) == 1, 30, interval=0.2,
             what="the gauge at 1")
    assert {i.agent for i in c.instances().values()} == {"agent-1", "agent-2"}
    c.ctl("scale", "web=0")
    wait_for(lambda: series not in c.scrape("scheduler"), 10, what="no series at web=0")
