"""The leader's lease kept alive: renewed every ttl/4 on a thread of its own, over an etcd
channel of its own (gRPC's synchronous API), so a long pass of the reconcile loop cannot cost the lease; while
the loop has not shown a sign of life for LOOP_STALL (wedged), the thread stops renewing and
another replica takes over. The rules of how long a renewal counts: leadership.Validity."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

import aetcd.rpc
import grpc

from common.aio import wait_event
from common.tls import TlsError
from scheduler.etcdclient import load_tls
from scheduler.etcdconn import Connection
from scheduler.leadership import Validity

log = logging.getLogger("scheduler.election")
TICK = 0.5          # seconds between two signs of life of the loop to the lease thread
LOOP_STALL = 30.0   # seconds without one after which the lease is let go


async def keep(conn: Connection, lease: int, validity: Validity,
               changed: Callable[[], None]) -> None:
    """Keep `lease` alive, extending `validity` at each renewal and calling `changed` (on
    this loop); return once the lease is surely gone: etcd says so, or this loop is wedged."""
    loop = asyncio.get_running_loop()
    ended, stop = asyncio.Event(), threading.Event()
    tick = [time.monotonic()]

    def tell() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(changed)

    def renewing() -> None:
        try:
            _renew(Renewer(conn), lease, validity, stop, tick, tell)
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ended.set)
    thread = threading.Thread(target=renewing, name="lease", daemon=True)
    thread.start()
    try:
        while not ended.is_set():
            tick[0] = time.monotonic()
            await wait_event(ended, TICK)
    finally:
        stop.set()


class Renewer:
    """Lease keepalives over gRPC's synchronous API, on the lease thread: no second asyncio
    loop speaking gRPC beside the scheduler's (that cost every call of the scheduler CPU).
    Starts at the endpoint the scheduler's connection uses; moves on when one fails."""

    def __init__(self, conn: Connection) -> None:
        self.endpoints, self.index, self.auth = conn.endpoints, conn.index, conn.auth
        self.channel: grpc.Channel | None = None
        self.metadata: tuple[tuple[str, str], ...] = ()

    def _open(self, timeout: float) -> aetcd.rpc.LeaseStub:
        if self.channel is None:
            e = self.endpoints[self.index]
            target = f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}"
            if e.tls or self.auth.tls:
                m = load_tls(self.auth)
                creds = grpc.ssl_channel_credentials(m.ca, m.key, m.cert)
                self.channel = grpc.secure_channel(target, creds)
            else:
                self.channel = grpc.insecure_channel(target)
            self.metadata = ()
            if self.auth.user:
                reply = aetcd.rpc.AuthStub(self.channel).Authenticate(
                    aetcd.rpc.AuthenticateRequest(name=self.auth.user,
                                                  password=self.auth.password),
                    timeout=timeout)
                self.metadata = (("token", reply.token),)
        return aetcd.rpc.LeaseStub(self.channel)

    def refresh(self, lease: int, timeout: float) -> int:
        """The lease's ttl after a keepalive (0: it ended); RuntimeError if this endpoint
        did not answer (the next is tried next time)."""
        try:
            stub = self._open(timeout)
            replies = stub.LeaseKeepAlive(iter([aetcd.rpc.LeaseKeepAliveRequest(ID=lease)]),
                                          timeout=timeout, metadata=self.metadata)
            return int(next(replies).TTL)
        except (grpc.RpcError, StopIteration, TlsError) as e:
            self.close()
            text = e.details() if isinstance(e, grpc.RpcError) else str(e)
            if not (isinstance(e, grpc.RpcError) and "auth token" in (text or "")):
                self.index = (self.index + 1) % len(self.endpoints)
            raise RuntimeError(text or type(e).__name__) from None

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def _renew(renewer: Renewer, lease: int, validity: Validity, stop: threading.Event,
           tick: list[float], tell: Callable[[], None]) -> None:
    """The lease thread's loop. A renewal that comes late (etcd electing its own leader,
    say) only makes the leader stop for a while: the lease is alive, its key too, so the
    same candidacy leads again, same epoch."""
    last_error, lapsed = "", False
    try:
        while not stop.is_set():
            sent = time.monotonic()
            if sent - tick[0] > LOOP_STALL:
                log.error("the scheduler's loop has not run for %.0fs: no longer renewing "
                          "its lease", sent - tick[0])
                return
            if not lapsed and not validity.valid(sent):
                lapsed = True
                log.warning("lease not renewed in time (%s): not leading until it is",
                            last_error)
                tell()
            try:  # an endpoint that does not answer is left within a renewal's period
                ttl = renewer.refresh(lease, max(0.5, validity.renew_every))
            except RuntimeError as e:
                last_error = str(e)
                stop.wait(validity.renew_every / 2)
                continue
            if ttl <= 0:
                log.warning("etcd says this scheduler's lease ended: standing again")
                return
            validity.renewed(sent, float(ttl))
            if lapsed:
                lapsed = False
                log.info("lease renewed again")
            tell()
            stop.wait(validity.renew_every)
    finally:
        renewer.close()
