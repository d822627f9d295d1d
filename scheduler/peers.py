"""This replica's view of the others: a channel to each (to forward calls to the leader,
to check one's health), and `ctl schedulers`' answer."""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.identity import role_host
from common.tls import Credentials, target
from proto import formation_pb2 as pb
from scheduler.election import ETCD_ERRORS
from scheduler.errors import Rejected
from scheduler.replica import Replica

MAX_PEERS = 64  # channels kept; addresses come from etcd, so bounded all the same
HEALTH_TIMEOUT = 1.0  # seconds a replica has to answer `ctl schedulers`' health check
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20),
                   ("grpc.max_send_message_length", 64 * 2**20),
                   # a restarted replica is dialled again within a second, not minutes
                   ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   # a leader frozen or cut off ends the streams forwarded to it within 15 s
                   # (the servers allow a ping every 5 s: common/grpcserve.py)
                   ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]


class Peers:
    """Channels to the replicas (the leader, or any for a health check), one per address,
    with this replica's own certificate when it serves TLS."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        found = self._channels.get(address)
        if found is None:
            if len(self._channels) >= MAX_PEERS:  # the oldest goes (closed when collected)
                self._channels.pop(next(iter(self._channels)))
            if self.credentials is None:
                found = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                found = grpc.aio.secure_channel(
                    address, self.credentials.channel_credentials(),
                    options=CHANNEL_OPTIONS + target(role_host("scheduler")))
            self._channels[address] = found
        return found

    async def ready(self, address: str, timeout: float) -> bool:
        """Can this replica reach `address` now (within timeout)?"""
        try:
            await asyncio.wait_for(self.channel(address).channel_ready(), timeout)
            return True
        except TimeoutError:
            return False

    async def healthy(self, address: str, timeout: float = HEALTH_TIMEOUT) -> bool:
        """Does the replica at `address` answer its health check with SERVING?"""
        stub = health_pb2_grpc.HealthStub(self.channel(address))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


async def list_schedulers(replica: Replica, peers: Peers) -> pb.ListSchedulersReply:
    """Every replica standing in etcd, the leader first, each health-checked now (this one
    by its own lease)."""
    try:
        found = await replica.election.list()
    except ETCD_ERRORS as e:
        raise Rejected(f"cannot read the replicas from etcd: {e}",
                       grpc.StatusCode.UNAVAILABLE) from None
    me = replica.election.me

    async def healthy(address: str, key: bytes) -> bool:
        if me is not None and key == me.key:
            return replica.election.healthy()
        return await peers.healthy(address)
    health = await asyncio.gather(*(healthy(c.address, c.key) for c in found))
    return pb.ListSchedulersReply(schedulers=[
        pb.SchedulerInfo(name=c.name, address=c.address, leader=i == 0,
                         since=(c.leading_since or c.joined) if i == 0 else c.joined,
                         healthy=ok)
        for i, (c, ok) in enumerate(zip(found, health, strict=True))])
