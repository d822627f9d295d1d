"""One mapping from the scheduler's errors to gRPC status codes, for both services."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from scheduler.store import StoreUnavailable

T = TypeVar("T")


class Rejected(Exception):
    """A request that must be refused with `code` (INVALID_ARGUMENT unless said)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


def status_of(e: Exception) -> grpc.StatusCode | None:
    """The status code an error is answered with, or None if it is not the client's to see
    (a bug: it propagates and gRPC answers UNKNOWN, and it is logged)."""
    if isinstance(e, Rejected):
        return e.code
    if isinstance(e, ValueError):  # InvalidName and AppDefError are ValueErrors
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(e, StoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    return None


async def answer(context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]) -> T:
    """Run fn; abort the call with the mapped status on a known error."""
    try:
        return await fn()
    except (Rejected, ValueError, StoreUnavailable) as e:
        code = status_of(e)
        assert code is not None
        await context.abort(code, str(e))
        raise  # unreachable: abort raises
