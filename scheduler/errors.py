"""One mapping from the scheduler's errors to gRPC status codes, for both services."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from scheduler import store
from scheduler.leadership import NotLeader
from scheduler.store import StoreUnavailable

T = TypeVar("T")
# Trailing metadata of a call refused because this replica does not lead (any more): nothing
# of it was done, so the replica that forwarded it may send it to the new leader.
NOT_LEADER = "formation-not-leader"
# ... and of one whose term ended after it wrote to etcd: done in part, or whole, or not at
# all. Not sent again by a forwarding replica nor by ctl, which says so.
UNKNOWN_OUTCOME = "formation-outcome-unknown"


class Rejected(Exception):
    """A request that must be refused with `code` (INVALID_ARGUMENT unless said)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


async def answer(context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]) -> T:
    """Run fn; abort the call with the status of a known error. Any other error is a bug: it
    propagates, is logged, and gRPC answers UNKNOWN."""
    wrote = store.writes.set([False])  # set by the call's fenced writes (store.py)
    try:
        return await fn()
    except Rejected as e:
        code, message = e.code, str(e)
    except ValueError as e:  # InvalidName and AppDefError are ValueErrors
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
    except StoreUnavailable as e:
        code, message = grpc.StatusCode.UNAVAILABLE, str(e)
    except NotLeader as e:
        if (store.writes.get() or [False])[0]:
            context.set_trailing_metadata(((UNKNOWN_OUTCOME, "1"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{e}: the leader changed after "
                                "part of this change was written; check before you repeat it")
        await not_leader(context, str(e))
    finally:
        store.writes.reset(wrote)
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


async def not_leader(context: grpc.aio.ServicerContext, why: str = "") -> None:
    """Refuse a call this replica cannot serve because it does not lead: UNAVAILABLE, which
    ctl answers by trying another address, marked so a forwarding replica retries it."""
    context.set_trailing_metadata(((NOT_LEADER, "1"),))
    await context.abort(grpc.StatusCode.UNAVAILABLE,
                        why or "this scheduler does not lead (any more): try another")
