"""A typed client of the Control service that tries each scheduler address in turn and maps
gRPC failures to CtlError with the right exit code."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from common.identity import role_host
from common.tls import Material, TlsError, TlsPaths, load, target
from ctl.errors import RUNTIME, USAGE, CtlError
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg

REJECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS}
TIMEOUT = 10.0
UNKNOWN_OUTCOME = "formation-outcome-unknown"  # the scheduler's (scheduler/errors.py)
CONNECT_TIMEOUT = 3.0  # seconds for an address that is not the last to connect, or refuse


DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
# Words of gRPC's UNAVAILABLE details that mean the TLS handshake failed, not the network.
HANDSHAKE = ("ssl", "tls", "handshake", "certificate", "hostname verification", "socket closed")


def _settles(channel: grpc.Channel) -> bool:
    """Does the channel connect, or fail to, within CONNECT_TIMEOUT? (False: the address
    neither answers nor refuses: packets dropped, or a frozen process.)"""
    settled = threading.Event()

    def seen(state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.READY,
                     grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            settled.set()
    channel.subscribe(seen, try_to_connect=True)
    try:
        return settled.wait(CONNECT_TIMEOUT)
    finally:
        channel.unsubscribe(seen)


class Client:
    def __init__(self, addresses: str, tls: TlsPaths | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        if not self.addresses:
            raise CtlError("no scheduler address given", USAGE)
        self.timeout = timeout
        self.tls: Material | None = None
        if tls is not None:
            try:
                self.tls = load(tls, chain=False)
            except TlsError as e:
                raise CtlError(str(e), USAGE) from None
        self._channel: grpc.Channel | None = None
        self._stub: pbg.ControlStub | None = None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def _open(self, address: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(address, options=options)
        m = self.tls
        # The scheduler's certificate must be a scheduler's of our CA, whatever address.
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(m.ca, m.key, m.cert),
                                   options=(options or []) + target(role_host("scheduler")))

    def _unreachable(self, e: grpc.RpcError | None) -> CtlError:
        where = ",".join(self.addresses)
        detail = (e.details() or "") if e is not None else ""
        if any(word in detail.lower() for word in HANDSHAKE):
            mine = "with TLS" if self.tls else "without TLS"
            return CtlError(f"cannot reach the scheduler at {where}: the TLS handshake failed "
                            f"({mine}; check --tls-ca/--tls-cert/--tls-key and that the "
                            f"scheduler's certificate is of the same CA)")
        if detail and "etcd" in detail:
            return CtlError(f"scheduler at {where}: {detail}", RUNTIME)
        return CtlError(f"cannot reach the scheduler at {where}", RUNTIME)

    def _fail(self, e: grpc.RpcError) -> CtlError:
        if e.code() in REJECTED:
            return CtlError(e.details() or e.code().name, USAGE)
        if e.code() in DENIED:
            return CtlError(f"permission denied: {e.details() or e.code().name}")
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            return self._unreachable(e)
        return CtlError(f"scheduler error: {e.details() or e.code().name}")

    def logs(self, request: pb.LogsRequest) -> Iterator[pb.LogLine]:
        """Stream log lines; the first address that answers serves the whole stream."""
        return self._stream(lambda s: s.Logs, request)

    def events(self, request: pb.EventsRequest) -> Iterator[pb.EventInfo]:
        """Stream an app's events; the first address that answers serves the whole stream."""
        return self._stream(lambda s: s.Events, request)

    def _stream(self, method: Callable[[pbg.ControlStub], Callable[..., Any]],
                request: Any) -> Iterator[Any]:
        last: CtlError | None = None
        for address in self.addresses:
            # No BDP probing: a paused `ctl logs -f` must not grow its window to tens of MB
            # (the scheduler's per-reader budget is what bounds a slow reader).
            channel = self._open(address, options=[("grpc.http2.bdp_probe", 0)])
            try:
                stream = method(pbg.ControlStub(channel))(
                    request, timeout=None if request.follow else self.timeout)
                try:
                    yield from stream
                    return
                except grpc.RpcError as e:
                    last = self._fail(e)
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise last from None
            finally:
                channel.close()
        raise last or CtlError("no scheduler address given", USAGE)

    def _call(self, method: Callable[[pbg.ControlStub], Callable[..., Any]], request: Any) -> Any:
        """Call on the channel in use, else each address in turn: one that refuses or does
        not connect within CONNECT_TIMEOUT (a dead or cut-off replica) is left for the next
        at once; the last is given the whole timeout."""
        last: grpc.RpcError | None = None
        silent = False
        tries: list[str | None] = ([None] if self._stub is not None else []) + self.addresses
        for i, address in enumerate(tries):
            if address is not None:
                self._channel = self._open(address)
                self._stub = pbg.ControlStub(self._channel)
                if i < len(tries) - 1 and not _settles(self._channel):
                    silent = True
                    self.close()
                    self._stub = None
                    continue
            assert self._stub is not None
            try:
                return method(self._stub)(request, timeout=self.timeout)
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise self._fail(e) from None
                if any(k == UNKNOWN_OUTCOME for k, _ in e.trailing_metadata() or ()):
                    # the leader changed after the change was written in part: not repeated
                    raise CtlError(f"scheduler: {e.details()}", RUNTIME) from None
                last = e
                self.close()
                self._stub = None
        if (last is None and silent) or (last is not None and
                                         last.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CtlError(f"scheduler at {','.join(self.addresses)} did not answer within "
                           f"{self.timeout:.0f}s", RUNTIME)
        raise self._unreachable(last)

    def deploy(self, request: pb.DeployRequest) -> pb.DeployReply:
        return self._call(lambda s: s.Deploy, request)

    def scale(self, app: str, counts: dict[str, int], author: str = "",
              undo: bool = False) -> pb.ScaleReply:
        return self._call(lambda s: s.Scale, pb.ScaleRequest(app=app, counts=counts,
                                                             author=author, undo=undo))

    def scales(self, app: str) -> list[pb.ScaleChange]:
        return list(self._call(lambda s: s.ListScales, pb.ListScalesRequest(app=app)).changes)

    def formation(self, app: str) -> pb.FormationReply:
        return self._call(lambda s: s.GetFormation, pb.GetFormationRequest(app=app))

    def instances(self, app: str, ptype: str = "", state: int = 0) -> list[pb.Instance]:
        """Every instance of app (of one type, in one state), read page by page."""
        rows: list[pb.Instance] = []
        token = ""
        while True:
            reply = self._call(lambda s: s.ListInstances, pb.ListInstancesRequest(
                app=app, type=ptype, state=state, page_token=token))  # type: ignore[arg-type]
            rows.extend(reply.instances)
            token = reply.next_page_token
            if not token:
                return rows

    def drain(self, agent: str, undo: bool = False) -> pb.Agent:
        return self._call(lambda s: s.Drain, pb.DrainRequest(agent=agent, undo=undo)).agent

    def remove_agent(self, agent: str) -> None:
        self._call(lambda s: s.RemoveAgent, pb.RemoveAgentRequest(agent=agent))

    def config(self, app: str) -> pb.ConfigReply:
        return self._call(lambda s: s.GetConfig, pb.GetConfigRequest(app=app))

    def set_config(self, app: str, to_set: dict[str, str], unset: list[str],
                   author: str = "") -> pb.SetConfigReply:
        return self._call(lambda s: s.SetConfig, pb.SetConfigRequest(
            app=app, set=to_set, unset=unset, author=author))

    def rollback(self, app: str, version: int, author: str = "", run_release: bool = False
                 ) -> pb.RollbackReply:
        return self._call(lambda s: s.Rollback, pb.RollbackRequest(
            app=app, version=version, author=author, run_release=run_release))

    def restart(self, app: str, targets: list[str], author: str = "") -> pb.RestartReply:
        return self._call(lambda s: s.Restart,
                          pb.RestartRequest(app=app, targets=targets, author=author))

    def releases(self, app: str) -> list[pb.ReleaseInfo]:
        return list(self._call(lambda s: s.ListReleases,
                               pb.ListReleasesRequest(app=app)).releases)

    def schedulers(self) -> list[pb.SchedulerInfo]:
        return list(self._call(lambda s: s.ListSchedulers,
                               pb.ListSchedulersRequest()).schedulers)

    def agents(self) -> list[pb.Agent]:
        return list(self._call(lambda s: s.ListAgents, pb.ListAgentsRequest()).agents)
