"""One connection to etcd shared by everything a scheduler replica reads and writes (its data
through store.py, its candidacy through election.py): fails over between the endpoints,
renews an expired token, and says in one line why etcd cannot be used."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aetcd
import aetcd.exceptions

from common.tls import TlsError
from scheduler.etcdclient import Endpoint, EtcdAuth, EtcdClient, explain

log = logging.getLogger("scheduler.store")
T = TypeVar("T")
MAX_RECEIVE = 64 * 2**20  # bytes of one etcd response the client accepts


def _token_expired(text: str) -> bool:
    """etcd's ErrInvalidAuthToken and ErrAuthOldRevision: get a new token and retry."""
    return "invalid auth token" in text or "auth store is old" in text


def _refused(text: str) -> bool:
    return any(s in text for s in ("authentication failed", "permission denied",
                                   "user name is empty", "authentication is not enabled"))


def _electing(text: str) -> bool:
    """etcd's own leader is changing (ErrLeaderChanged, ErrNoLeader, ErrTimeoutDueToLeaderFail):
    the request was not applied; another member may answer."""
    return any(s in text for s in ("leader changed", "no leader",
                                   "timed out due to previous leader failure"))


class StoreUnavailable(RuntimeError):
    """No etcd endpoint answered."""


ETCD_ERRORS = (StoreUnavailable, aetcd.exceptions.ClientError, TimeoutError)  # etcd failed us

class Connection:
    """aetcd clients over one or more etcd endpoints, over TLS and as a user if `auth` says
    so; `call` runs an operation on the current one and fails over to the others."""

    def __init__(self, endpoints: Sequence[Endpoint], timeout: float = 5.0,
                 auth: EtcdAuth | None = None) -> None:
        self._endpoints = [Endpoint(*e) for e in endpoints]  # plain (host, port) pairs too
        self.timeout = timeout
        self.auth = auth or EtcdAuth()
        self._index = 0
        self._client = self._new_client()
        self.request_seconds: Callable[[str, float], None] = lambda op, s: None

    def _new_client(self) -> EtcdClient:
        return EtcdClient(self._endpoints[self._index], self.auth, timeout=self.timeout,
                          options={"grpc.max_receive_message_length": MAX_RECEIVE})

    async def _replace(self, failed: EtcdClient, next_endpoint: bool) -> None:
        """A new client (a new connection, authenticated again) instead of `failed`, unless
        a concurrent call replaced it already."""
        if failed is not self._client:
            return
        if next_endpoint:
            self._index = (self._index + 1) % len(self._endpoints)
        self._client = self._new_client()
        await failed.close()

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    @property
    def index(self) -> int:
        """The endpoint in use now (the one that answered last)."""
        return self._index

    async def close(self) -> None:
        await self._client.close()

    @property
    def client(self) -> EtcdClient:
        return self._client

    @property
    def target(self) -> str:
        return self._client.target

    async def call(self, op: str, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run fn against the current endpoint, failing over to the others once each. A token
        etcd calls expired (its --auth-token-ttl of idleness) is renewed once per call by a
        new connection; a refused user is StoreUnavailable with etcd's reason."""
        last: Exception | None = None
        tries, renewed, stale = len(self._endpoints), False, 0
        while tries > 0:
            client = self._client
            started = time.monotonic()
            try:
                await client.connect()  # first, so failures to authenticate are told apart
                result = await fn(client)
                self.request_seconds(op, time.monotonic() - started)
                return result
            except TlsError as e:  # files that changed since the start and cannot be used
                raise StoreUnavailable(f"etcd {self.target}: {e}") from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this task is being cancelled: not a failure of etcd
                # gRPC cancelled the call: its channel was closed by a concurrent call's
                # failover to another endpoint. Try again on the client now in use.
                if stale < 3:
                    stale += 1
                    continue
                raise StoreUnavailable(f"etcd {self.target}: the call was cancelled") from None
            except (aetcd.exceptions.ClientError, TimeoutError) as e:
                text = str(e)
                if client is not self._client and stale < 3:  # replaced by another call
                    stale += 1
                    continue
                if self.auth.user and not renewed and _token_expired(text):
                    renewed = True
                    log.info("etcd %s: auth token expired (%s); authenticating again",
                             self.target, explain(e))
                    await self._replace(client, next_endpoint=False)
                    continue
                if _refused(text):  # every endpoint shares the users: no failing over
                    who = f"user {self.auth.user}" if self.auth.user else "this client"
                    raise StoreUnavailable(f"etcd {self.target} refused {who}: "
                                           f"{explain(e)}") from None
                if not isinstance(e, (aetcd.exceptions.ConnectionFailedError,
                                      aetcd.exceptions.ConnectionTimeoutError, TimeoutError)) \
                        and not _electing(text):
                    raise
                last = e
                tries -= 1
                if len(self._endpoints) > 1:  # with one endpoint the caller says it
                    log.warning("etcd %s failed after %.2fs: %s", self.target,
                                time.monotonic() - started, explain(e))
                    await self._replace(client, next_endpoint=True)
        raise StoreUnavailable(f"etcd unavailable ({self.target}): {explain(last)}")
