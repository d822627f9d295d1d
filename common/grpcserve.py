"""Serving a service of proto/formation.proto, for both daemons: handlers built from the
descriptor instead of the generated add_*_to_server, so that

- a request that is not a valid message is answered INVALID_ARGUMENT (grpc's own answer is
  UNKNOWN "Unexpected DecodeError"), before the servicer sees it;
- a reply may be bytes already encoded (a read model's cache), sent as they are;
- the port is bound exclusively: grpc sets SO_REUSEPORT by default, so a second daemon on the
  same port would bind too and take half the calls.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from common.identity import Identity
from common.tls import caller_identity
from proto import formation_pb2 as pb

# Who may call a method: (method name, the caller's identity) -> why not, or None if allowed.
# Given only when the server uses TLS: a plaintext server (loopback, or --insecure) has no
# identities to check.
Policy = Callable[[str, Identity | None], str | None]
log = logging.getLogger("grpc.policy")
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    # Clients that watch for hours (formation-lb) ping every 10 s to notice a vanished
    # server; gRPC's default (a ping at most every 5 min without data) would call that abuse
    # and end their streams with "too_many_pings" after about 30 s.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


class _Undecodable:
    """Stands for a request that could not be decoded."""


UNDECODABLE = _Undecodable()


class BadRequest(ValueError):
    """A streamed request that is not a valid message. Raised where the stream is read; the
    handler's own task answers INVALID_ARGUMENT (an abort from another task may be lost)."""


def _decoder(message_type: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError):
            return UNDECODABLE
    return decode


def _encode(reply: Any) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


async def _refuse(context: grpc.aio.ServicerContext, what: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {what} message")


async def authorize(policy: Policy, name: str, context: grpc.aio.ServicerContext) -> None:
    """Abort the call unless policy allows its caller (a forwarded call's: caller_identity)."""
    who = caller_identity(context)
    why = policy(name, who)
    if why is not None:
        log.warning("refused %s from %s: %s", name, context.peer(), why)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED if who is None
                            else grpc.StatusCode.PERMISSION_DENIED, why)


def _guarded(method: Any, handler: Callable[..., Any], policy: Policy | None
             ) -> Callable[..., Any]:
    """handler, run only once policy allows the caller: before anything of the request is
    looked at, so a caller who may not call a method learns nothing else from it."""
    if policy is None:
        return handler
    if method.server_streaming:
        async def streaming(request: Any, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[Any]:
            await authorize(policy, method.name, context)
            async for reply in handler(request, context):
                yield reply
        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await authorize(policy, method.name, context)
        return await handler(request, context)
    return unary


def _wrap(method: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    what = method.input_type.name
    if method.client_streaming:
        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[Any]:
            async for request in requests:
                if request is UNDECODABLE:
                    raise BadRequest(f"not a valid {what} message")
                yield request

        if method.server_streaming:
            async def stream_stream(requests: AsyncIterator[Any],
                                    context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for reply in fn(checked(requests, context), context):
                        yield reply
                except BadRequest as e:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return stream_stream

        async def stream_unary(requests: AsyncIterator[Any],
                               context: grpc.aio.ServicerContext) -> Any:
            try:
                return await fn(checked(requests, context), context)
            except BadRequest as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return stream_unary

    if method.server_streaming:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[Any]:
            if request is UNDECODABLE:
                await _refuse(context, what)
            async for reply in fn(request, context):
                yield reply
        return unary_stream

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is UNDECODABLE:
            await _refuse(context, what)
        return await fn(request, context)
    return unary_unary


_MAKERS = {(False, False): grpc.unary_unary_rpc_method_handler,
           (False, True): grpc.unary_stream_rpc_method_handler,
           (True, False): grpc.stream_unary_rpc_method_handler,
           (True, True): grpc.stream_stream_rpc_method_handler}


class _Routed(grpc.GenericRpcHandler):
    """A service's handlers, unless `route` gives another for a call (a follower's
    forwarding: scheduler/forward.py). A lookup, not an interceptor: no cost per call but a
    function call."""

    def __init__(self, route: Callable[[grpc.HandlerCallDetails], Any | None],
                 local: grpc.GenericRpcHandler) -> None:
        self.route, self.local = route, local

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return self.route(details) or self.local.service(details)


def add_service(servicer: object, server: grpc.aio.Server, service: str,
                policy: Policy | None = None,
                route: Callable[[grpc.HandlerCallDetails], Any | None] | None = None) -> None:
    """Serve `servicer`'s methods as formation.v1.<service>, each call first allowed by
    policy (if given): a refusal is PERMISSION_DENIED (UNAUTHENTICATED for no identity);
    `route` may serve a call with a handler of its own instead."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name[service].methods:
        make = _MAKERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            _guarded(method, _wrap(method, getattr(servicer, method.name)), policy),
            request_deserializer=_decoder(getattr(pb, method.input_type.name)),
            response_serializer=_encode)
    local = grpc.method_handlers_generic_handler(f"formation.v1.{service}", handlers)
    server.add_generic_rpc_handlers((local if route is None else _Routed(route, local),))


def bind(server: grpc.aio.Server, address: str,
         credentials: grpc.ServerCredentials | None = None) -> None:
    """Listen on address (with TLS if credentials are given), or raise OSError with one line
    if it cannot."""
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: {e}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address}: address in use or not available")
