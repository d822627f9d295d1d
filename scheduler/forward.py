"""A replica that does not lead forwards every Control call to the leader, as Nomad's
followers do, so ctl and formation-lb work whichever replica they reach first.

The call is relayed as bytes (no decoding, nothing of it changed): the reply, stream or
status is the leader's. The caller's permission is checked here first, and its identity
travels in CALLER_KEY (believed by the leader only from a scheduler's certificate:
common/tls.caller_identity). While no replica leads, or the leader it knew cannot be
reached, the call waits for the next one (within its own deadline, and no longer than a new
leader takes to be elected: Replica.leader_wait); a call the leader refused
because it no longer leads (errors.NOT_LEADER: nothing was done) is sent again to the next.
A call is forwarded once at most: a replica that gets a forwarded call and does not lead
refuses it with NOT_LEADER.

`ListSchedulers` is answered by each replica itself: it must work while none leads.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from common.grpcserve import Policy, authorize
from common.identity import identity_uri
from common.tls import CALLER_KEY, caller_identity
from proto import formation_pb2 as pb
from scheduler import instruments
from scheduler.errors import NOT_LEADER, UNKNOWN_OUTCOME, not_leader
from scheduler.leadership import Candidate
from scheduler.peers import Peers
from scheduler.replica import NoLeader, Replica

log = logging.getLogger("scheduler.forward")
SERVICE = "formation.v1.Control"
FORWARDED = "formation-forwarded"  # metadata: the replica that forwarded the call
LOCAL = frozenset({"ListSchedulers"})
RETRY_PAUSE = 0.2   # seconds between two tries while the leader cannot be reached
# gRPC's words for a call that never left this replica: safe to send again.
NOT_SENT = ("failed to connect", "connection refused", "connections to all backends failing",
            "no route to host", "name resolution")


def retryable(e: grpc.aio.AioRpcError) -> bool:
    """Was the call surely not done? Refused by a replica that does not lead, or never sent."""
    if e.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    if any(k == NOT_LEADER for k, _ in e.trailing_metadata() or ()):
        return True
    return any(word in (e.details() or "").lower() for word in NOT_SENT)


class Forwarder:
    """Serves Control calls here while this replica leads; forwards them otherwise
    (`route`, given to common/grpcserve.add_service)."""

    def __init__(self, replica: Replica, peers: Peers, policy: Policy | None) -> None:
        self.replica = replica
        self.peers = peers
        self.policy = policy
        self.methods = {m.name: m for m in pb.DESCRIPTOR.services_by_name["Control"].methods}

    def route(self, details: grpc.HandlerCallDetails) -> Any | None:
        """None (served here) while this replica leads; else a handler forwarding the call."""
        if self.replica.leading():
            return None
        service, _, name = details.method.lstrip("/").rpartition("/")
        method = self.methods.get(name)
        if service != SERVICE or method is None or name in LOCAL:
            return None
        if any(k == FORWARDED for k, _ in details.invocation_metadata or ()):
            return _refuse(method)
        instruments.FORWARDED.labels(name).inc()
        path = details.method
        if method.client_streaming:
            return grpc.stream_stream_rpc_method_handler(self._bidi(name, path))
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._stream(name, path))
        return grpc.unary_unary_rpc_method_handler(self._unary(name, path))

    async def _prepare(self, name: str, context: grpc.aio.ServicerContext
                       ) -> tuple[list[tuple[str, str]], float]:
        """The caller is allowed (else the call ends here); the metadata to send, and when
        to give up waiting for a leader."""
        if self.policy is not None:
            await authorize(self.policy, name, context)
        metadata = [(FORWARDED, self.replica.name)]
        who = caller_identity(context)
        if who is not None:
            metadata.append((CALLER_KEY, identity_uri(who.role, who.name)))
        left = context.time_remaining()
        wait = self.replica.leader_wait if left is None else min(left, self.replica.leader_wait)
        return metadata, time.monotonic() + wait

    async def _leader_of(self, deadline: float, context: grpc.aio.ServicerContext
                         ) -> Candidate:
        try:
            return await self.replica.wait_leader(deadline)
        except NoLeader as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            raise AssertionError("unreachable: abort raises") from None

    async def _pause(self, deadline: float, e: grpc.aio.AioRpcError,
                     context: grpc.aio.ServicerContext) -> None:
        """After a try that surely did nothing: wait a little (or for the next leader), or
        give the caller the leader's answer once its deadline is near."""
        if not retryable(e) or time.monotonic() + RETRY_PAUSE >= deadline:
            await _relay(e, context)
        await self.replica.election.changed(RETRY_PAUSE)

    def _unary(self, name: str, path: str) -> Callable[..., Awaitable[bytes]]:
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata, deadline = await self._prepare(name, context)
            while True:
                leader = await self._leader_of(deadline, context)
                call = self.peers.channel(leader.address).unary_unary(path)
                try:
                    return await call(request, metadata=metadata,
                                      timeout=context.time_remaining())
                except grpc.aio.AioRpcError as e:
                    await self._pause(deadline, e, context)
        return handler

    def _stream(self, name: str, path: str) -> Callable[..., AsyncIterator[bytes]]:
        async def handler(request: bytes, context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[bytes]:
            metadata, deadline = await self._prepare(name, context)
            left = context.time_remaining()
            while True:
                leader = await self._leader_of(deadline, context)
                call = self.peers.channel(leader.address).unary_stream(path)(
                    request, metadata=metadata, timeout=left)
                sent = False
                try:
                    async for reply in self._while_it_leads(call, leader, context):
                        sent = True
                        yield reply
                    return
                except grpc.aio.AioRpcError as e:
                    if sent:
                        await _relay(e, context)
                    await self._pause(deadline, e, context)
        return handler

    def _bidi(self, name: str, path: str) -> Callable[..., AsyncIterator[bytes]]:
        async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[bytes]:
            metadata, deadline = await self._prepare(name, context)
            leader = await self._leader_of(deadline, context)
            call = self.peers.channel(leader.address).stream_stream(path)(
                requests, metadata=metadata, timeout=context.time_remaining())
            try:
                async for reply in self._while_it_leads(call, leader, context):
                    yield reply
            except grpc.aio.AioRpcError as e:
                await _relay(e, context)
        return handler

    async def _while_it_leads(self, call: Any, leader: Candidate,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """The replies of a forwarded stream while the replica it went to leads: once another
        does (the old one frozen or cut off may never say so), the stream ends UNAVAILABLE
        and the caller (formation-lb, `ctl events -f`) follows the new leader."""
        async def changed() -> None:
            while (now := self.replica.election.leader) is None or now.key == leader.key:
                await self.replica.election.changed(1.0)
        watcher = asyncio.create_task(changed())
        watcher.add_done_callback(lambda _: call.cancel())
        try:
            async for reply in call:
                yield reply
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not watcher.done() or (task is not None and task.cancelling()):
                raise
            await not_leader(context, f"{leader.name} no longer leads: follow the new leader")
        finally:
            watcher.cancel()
            call.cancel()

async def _relay(e: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> None:
    """End the caller's call with the leader's status (or the failure to reach it), and
    what its trailing metadata says of it (errors.UNKNOWN_OUTCOME)."""
    said = [(k, v) for k, v in e.trailing_metadata() or () if k == UNKNOWN_OUTCOME]
    if said:
        context.set_trailing_metadata(tuple(said))
    await context.abort(e.code(), e.details() or e.code().name)


def _refuse(method: Any) -> Any:
    """A forwarded call reached a replica that does not lead: refused, never forwarded on."""
    if method.client_streaming:
        async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await not_leader(context)
            yield b""
        return grpc.stream_stream_rpc_method_handler(bidi)
    if method.server_streaming:
        async def stream(request: Any, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[Any]:
            await not_leader(context)
            yield b""
        return grpc.unary_stream_rpc_method_handler(stream)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await not_leader(context)
    return grpc.unary_unary_rpc_method_handler(unary)
