"""The WatchEndpoints stream: say what is watched, apply each whole set, acknowledge it once
applied and its removed servers drained (drain.py: in order, while later sets are read and
applied); on any failure try the next scheduler address, with backoff.

    connecting --first set--> following --stream ends / fails--> retrying --first set--> ...
        |                                                            ^  |
        '--refused (INVALID_ARGUMENT, PERMISSION_DENIED,             '--'  one line per change
           UNAUTHENTICATED) before any set ever came: Refused, exit 1      of state, not per try

Static stability: while no stream is up, HAProxy keeps the servers it has (an unreachable
scheduler is no reason to stop balancing); a new stream starts with the whole set, and
applying it removes whatever it does not list. A refusal after formation-lb has followed a
stream once is logged and retried at the slowest pace, since the scheduler may be mid-change.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from common.identity import role_host
from common.tls import Credentials, target
from lb.drain import Acker, Busy
from lb.instruments import CONNECTED
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg

log = logging.getLogger("lb")
BACKOFF_FIRST, BACKOFF_MOST = 0.2, 5.0  # seconds between tries: doubling, reset by a set
REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
           grpc.StatusCode.UNAUTHENTICATED}
SLOW = REFUSED | {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION,
                  grpc.StatusCode.RESOURCE_EXHAUSTED}
# The largest EndpointSet formation-lb takes (servers.MAX_ENDPOINTS, 30,000 endpoints) must
# fit. An Endpoint with every field at its longest (app, type and agent of 63 characters, the
# instance `<63>.10000`, a host of 253, a release and a generation of 10 bytes each) is 548
# bytes, 551 with its tag and length in the set: 30,000 of them are 15.8 MiB, too close to
# 16 MiB, hence 32. A usual one (`web.1234` on `agent-12` at 10.0.12.34) is 51 bytes: 30,000
# are 1.5 MiB.
MAX_MESSAGE = 32 * 2**20
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # A scheduler that vanished (its machine off, a cable cut) sends no RST: a ping
    # unanswered for 5 s ends the stream. The scheduler must allow pings this often.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # a quiet stream (no change for hours) too
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
# A set applied: the servers it took out of balancing, or None if it is not to be acknowledged.
Apply = Callable[[pb.EndpointSet], Awaitable[list[str] | None]]


class Refused(Exception):
    """The scheduler refused the watch before any set came: a mistake in the flags or the
    certificate, which no retry mends."""


class Follower:
    def __init__(self, addresses: list[str], watch: pb.EndpointsWatch, apply: Apply,
                 busy: Busy, held: Callable[[], int], tls: Credentials | None = None) -> None:
        self.addresses = addresses
        self.watch = watch
        self.apply = apply
        self.busy = busy       # which removed servers still have requests in flight
        self.held = held       # how many servers HAProxy keeps meanwhile, for the log
        self.tls = tls         # each dial takes the certificate as its files are then
        self.ever = False      # a set came on some stream since the start
        self.following = False  # a set came on the current stream
        self._said = "connecting"

    async def run(self) -> None:
        """Forever, unless Refused."""
        attempt, delay = 0, BACKOFF_FIRST
        while True:
            address = self.addresses[attempt % len(self.addresses)]
            attempt += 1
            self.following = False
            code: grpc.StatusCode | None = None
            try:
                await self._stream(address)
                state, detail = "ended", f"scheduler {address} ended the stream"
            except grpc.aio.AioRpcError as e:
                code = e.code()
                detail = f"scheduler {address}: {e.details() or code.name}"
                if code in REFUSED and not self.ever:
                    raise Refused(f"{detail} ({code.name})") from None
                state = code.name
            finally:
                CONNECTED.set(0)
            if self.following:
                delay = BACKOFF_FIRST
            self._say(state, detail)
            pause = BACKOFF_MOST if code in SLOW else delay
            await asyncio.sleep(pause * random.uniform(0.8, 1.0))
            delay = min(delay * 2, BACKOFF_MOST)

    def _say(self, state: str, detail: str) -> None:
        """One line per change of state: not one per try while the same failure lasts."""
        if state == self._said:
            return
        if self._said == "following":
            log.warning("lost the endpoints stream (%s): keeping the servers HAProxy has "
                        "(%d active); reconnecting", detail, self.held())
        else:
            log.warning("no endpoints stream: %s (retrying)", detail)
        self._said = state

    async def _stream(self, address: str) -> None:
        """One stream, until it ends (returns) or fails (AioRpcError)."""
        outbox: asyncio.Queue[pb.EndpointsRequest] = asyncio.Queue()
        outbox.put_nowait(pb.EndpointsRequest(watch=self.watch))

        async def requests() -> AsyncIterator[pb.EndpointsRequest]:
            while True:
                yield await outbox.get()

        # Acknowledgements of this stream only: what still drains when it ends is dropped.
        acker = Acker(self.busy, lambda version: outbox.put_nowait(
            pb.EndpointsRequest(ack=pb.EndpointsAck(version=version))))
        async with self._channel(address) as channel:
            call = pbg.ControlStub(channel).WatchEndpoints(requests())
            acking = asyncio.create_task(acker.run())
            try:
                while True:
                    endpoints = await call.read()
                    if endpoints is grpc.aio.EOF:
                        return
                    if not self.following:
                        self.following = self.ever = True
                        CONNECTED.set(1)
                        self._said = "following"
                        log.info("following the endpoints of %s/%s at scheduler %s",
                                 self.watch.app, self.watch.type, address)
                    # Sets are applied one after the other, never cancelled half-way by a
                    # broken stream: HAProxy is left as a whole set made it.
                    removed = await self.apply(endpoints)
                    if removed is not None:
                        acker.add(endpoints.version, removed)
                    if acking.done():  # it never ends by itself: a bug, not to be hidden
                        acking.result()
            finally:
                call.cancel()
                acking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acking  # (re-raises what ended it, if anything did)

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        # Whatever address was dialled, the peer must hold a scheduler's certificate.
        options: list[tuple[str, int | str]] = [*CHANNEL_OPTIONS]
        return grpc.aio.secure_channel(address, self.tls.channel_credentials(),
                                       options=options + target(role_host("scheduler")))
