"""Control.WatchEndpoints: one stream per load balancer (formation-lb) or watcher.

The caller says what it watches first; it is then given the whole set of endpoints it asked
for, once now and once per change (only the newest set is ever queued: a watcher that reads
slowly skips sets, never piles them up). A watcher that acknowledges says which version it has
applied; until it does, instances that left the set are kept running (endpoints.py), at most
for their type's deregister_timeout, so a caller that never acknowledges delays stops by that
much and no more.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from common.grpcserve import BadRequest
from common.names import check_name
from common.tls import caller_identity
from proto import formation_pb2 as pb
from scheduler.endpoints import MAX_OTHER_WATCHERS, MAX_WATCHERS, Ep, Watcher
from scheduler.errors import Rejected
from scheduler.leadership import NotLeader
from scheduler.reconciler import Scheduler

log = logging.getLogger("scheduler.endpoints")
FIRST_MESSAGE_TIMEOUT = 10.0  # seconds a new stream may take to say what it watches
MAX_WATCHER_NAME = 255
# Who may hold back stops by acknowledging (with TLS): a load balancer or an operator.
ACKNOWLEDGING_ROLES = ("lb", "operator")


def endpoint_pb(e: Ep) -> pb.Endpoint:
    return pb.Endpoint(app=e.app, type=e.type, instance=e.instance, agent=e.agent, host=e.host,
                       port=e.port, release=e.release, generation=e.generation)


class Encoded:
    """The last message made of each set (endpoints.py gives every watcher of a type the same
    set object): 64 load balancers of one type cost one sort and one message, not 64."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[frozenset[Ep], int, pb.EndpointSet]] = {}

    def message(self, version: int, eps: frozenset[Ep]) -> pb.EndpointSet:
        made = self._made.get(id(eps))
        if made is not None and made[0] is eps and made[1] == version:
            return made[2]
        if len(self._made) >= 4 * MAX_WATCHERS:
            self._made.clear()
        message = pb.EndpointSet(version=version,
                                 endpoints=[endpoint_pb(e) for e in sorted(eps)])
        self._made[id(eps)] = (eps, version, message)
        return message


ENCODED = Encoded()


def check_watch(request: pb.EndpointsRequest, context: grpc.aio.ServicerContext
                ) -> pb.EndpointsWatch:
    """The first message: what to watch; Rejected (or a ValueError) if it is wrong."""
    if request.WhichOneof("kind") != "watch":
        raise Rejected("the first message of WatchEndpoints must be `watch`")
    w = request.watch
    if w.app:
        check_name("app", w.app)
    if w.type:
        check_name("process type", w.type)
    if len(w.name) > MAX_WATCHER_NAME or not w.name.isprintable():
        raise Rejected(f"watcher name must be at most {MAX_WATCHER_NAME} printable characters")
    who = caller_identity(context)
    if w.acknowledges and who is not None and who.role not in ACKNOWLEDGING_ROLES:
        raise Rejected(f"{who.role} may not hold back stops (acknowledges): only "
                       f"{' or '.join(ACKNOWLEDGING_ROLES)} may",
                       grpc.StatusCode.PERMISSION_DENIED)
    return w


async def first_message(requests: AsyncIterator[pb.EndpointsRequest]) -> pb.EndpointsRequest:
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
            return await anext(requests)
    except StopAsyncIteration:
        raise Rejected("the stream ended before its `watch` message") from None
    except TimeoutError:
        raise Rejected(f"no `watch` message within {FIRST_MESSAGE_TIMEOUT:g} s",
                       grpc.StatusCode.DEADLINE_EXCEEDED) from None


async def watch(s: Scheduler, requests: AsyncIterator[pb.EndpointsRequest],
                context: grpc.aio.ServicerContext) -> AsyncGenerator[pb.EndpointSet, None]:
    """The stream itself (the caller, control.py, answers Rejected with its status)."""
    asked = check_watch(await first_message(requests), context)
    wake = asyncio.Event()
    watcher = Watcher(asked.app, asked.type, asked.name or context.peer(), asked.acknowledges,
                      wake.set)
    wid = s.endpoints.watch(watcher)
    if wid is None:
        most = MAX_WATCHERS if asked.acknowledges else MAX_OTHER_WATCHERS
        kind = "acknowledging" if asked.acknowledges else "non-acknowledging"
        raise Rejected(f"{most} {kind} endpoint watchers are connected, the most there may "
                       "be", grpc.StatusCode.RESOURCE_EXHAUSTED)
    log.info("endpoints watcher %s connected (app %s, type %s%s)", watcher.name,
             asked.app or "*", asked.type or "*", ", acknowledges" if asked.acknowledges else "")
    failed: list[Rejected] = []
    reader = asyncio.create_task(_read_acks(s, watcher, requests, wake, failed))
    s.poke()  # a pass computes the set (none is computed while nobody watches)
    try:
        while True:
            await wake.wait()
            wake.clear()
            if failed:
                raise failed[0]
            if s.term_over:
                raise NotLeader("this scheduler no longer leads: watch again (the leader)")
            due = s.endpoints.take(watcher)
            if due is not None:
                yield ENCODED.message(*due)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        s.endpoints.unwatch(wid, time.monotonic())
        s.poke()  # a pass settles what its ghost holds (endpoints.py)
        log.info("endpoints watcher %s disconnected", watcher.name)


async def _read_acks(s: Scheduler, watcher: Watcher,
                     requests: AsyncIterator[pb.EndpointsRequest], wake: asyncio.Event,
                     failed: list[Rejected]) -> None:
    """Every later message is an ack of a version the watcher was given. The caller closing
    its side ends only this: it may still be given sets (a watcher that does not ack)."""
    try:
        async for request in requests:
            if request.WhichOneof("kind") != "ack":
                failed.append(Rejected("after `watch`, WatchEndpoints takes only `ack`"))
                return
            if not s.endpoints.ack(watcher, request.ack.version):
                failed.append(Rejected(f"ack of version {request.ack.version}, which this "
                                       f"stream was not given (newest: {watcher.given})"))
                return
            if s.endpoints.leaving:  # a held copy may be let go now
                s.poke()
    except BadRequest as e:  # an undecodable message (grpcserve.py)
        failed.append(Rejected(str(e)))
    finally:
        wake.set()
