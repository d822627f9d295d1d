"""Deregistration before stop inside the scheduler (no processes, sockets or etcd): a watcher
registered on the scheduler's endpoints, agents that report what the tests say."""
from __future__ import annotations

from common.states import InstanceState
from proto import formation_pb2 as pb
from scheduler.endpoints import Watcher
from scheduler.placement import InstanceKey
from scheduler.reconciler import Scheduler
from tests.test_reconciler import TYPES, last_list, make

WEB1, WEB2 = InstanceKey("a", "web.1"), InstanceKey("a", "web.2")


def running(key: InstanceKey, port: int, release: int = 1) -> pb.InstanceStatus:
    return pb.InstanceStatus(app=key.app, id=key.id, state=InstanceState.RUNNING,
                             release=release, pid=1, port=port)


async def two_webs_watched() -> tuple[Scheduler, Watcher]:
    """Agent n1 runs web.1 and web.2 of app a; a load balancer watches and has applied them."""
    s, _ = make()
    await s.agent_hello(pb.Hello(name="n1", address="10.0.0.1", capacity=10))
    await s.deploy("a", TYPES, {})
    await s.scale("a", {"web": 2})
    await s.reconcile()
    s.agent_status("n1", running(WEB1, 5001))
    s.agent_status("n1", running(WEB2, 5002))
    lb = Watcher("a", "web", "edge", True, lambda: None)
    s.endpoints.watch(lb)
    await s.reconcile()
    due = s.endpoints.take(lb)
    assert due is not None and {e.instance for e in due[1]} == {"web.1", "web.2"}
    assert {(e.host, e.port) for e in due[1]} == {("10.0.0.1", 5001), ("10.0.0.1", 5002)}
    s.endpoints.ack(lb, due[0])
    last_list(s, "n1")  # drained: later calls see only new lists
    return s, lb


async def test_a_scaled_down_copy_stays_in_its_agents_list_until_acknowledged():
    s, lb = await two_webs_watched()
    await s.scale("a", {"web": 1})
    await s.reconcile()
    assert WEB2 not in {key for key, _, _ in s.world.list_for("n1")}  # no longer assigned ...
    assert last_list(s, "n1") is None  # ... but its agent was not told: nothing changed
    due = s.endpoints.take(lb)
    assert due is not None and {e.instance for e in due[1]} == {"web.1"}
    s.endpoints.ack(lb, due[0])
    await s.reconcile()
    assert last_list(s, "n1") == ["a/web.1"]  # now it stops web.2


async def test_a_kept_copy_its_agent_no_longer_runs_is_never_sent_again():
    """A list never starts a copy again: after the agent reconnects without it (a restart
    killed it), or says it stopped, a held copy is left out of its list."""
    s, lb = await two_webs_watched()
    await s.scale("a", {"web": 1})
    await s.reconcile()
    assert s.endpoints.kept() == {"n1": [(WEB2, 1, 0)]}
    await s.agent_hello(pb.Hello(name="n1", address="10.0.0.1", capacity=10,
                                 instances=[running(WEB1, 5001)]))
    assert last_list(s, "n1") == ["a/web.1"]
    assert s.endpoints.kept() == {"n1": [(WEB2, 1, 0)]}  # still waited for, not restarted


async def test_without_a_watcher_nothing_waits():
    s, lb = await two_webs_watched()
    s.endpoints.unwatch(next(iter(s.endpoints.watchers)), 0.0)
    s.endpoints.ghosts.clear()  # (as after GHOST_TTL)
    await s.scale("a", {"web": 1})
    await s.reconcile()
    assert last_list(s, "n1") == ["a/web.1"]
    assert not s.endpoints.active() and not s.endpoints.ready  # forgotten: nobody watches
