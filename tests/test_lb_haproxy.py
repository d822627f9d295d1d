"""formation-lb end to end with the real HAProxy: a fake scheduler (a grpc.aio server of only
Control.WatchEndpoints, in the test's loop) gives it sets of two real HTTP backends (threads
on free ports). Every process started is ended by its pid; waits are polls with deadlines."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from common.haproxy import haproxy_binary
from lb.haproxy import config
from lb.servers import Admin, parse_state
from proto import formation_pb2 as pb
from proto import formation_pb2_grpc as pbg

ROOT = Path(__file__).resolve().parent.parent
# No skip without HAProxy: `make test` needs it (.ci/run installs it), and a skip would hide
# a missing install behind a green run.
assert haproxy_binary() is not None, "haproxy is not installed: apt-get install haproxy"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


async def until(test: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll test until it holds (True) or timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while not test() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return bool(test())


def running(pid: int) -> bool:
    """Is pid a live process (not gone, not a zombie)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def private_dir(haproxy_pid: int) -> Path:
    """formation-lb's directory: where its HAProxy's configuration is."""
    cmdline = Path(f"/proc/{haproxy_pid}/cmdline").read_text().split("\0")
    return Path(cmdline[cmdline.index("-f") + 1]).parent


class Handler(BaseHTTPRequestHandler):
    """Answers its server's name (HTTP/1.1, kept alive); /slow takes a second, and says when
    its answer was sent."""
    protocol_version = "HTTP/1.1"
    server: Backend

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.hits += 1
        if self.path == "/slow":
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(self.server.name.encode())
        self.wfile.flush()
        if self.path == "/slow":
            self.server.answered.append(time.monotonic())

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # HAProxy's checks connect and reset
            super().handle()


class Backend(ThreadingHTTPServer):
    """An instance: a one-letter name, how many requests reached it, and when each slow one
    was answered."""

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name, self.hits, self.port = name, 0, self.server_address[1]
        self.answered: list[float] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    a, b = Backend("a"), Backend("b")
    yield a, b
    for backend in (a, b):
        backend.shutdown()
        backend.server_close()


def ep(instance: str, port: int, host: str = "127.0.0.1") -> pb.Endpoint:
    return pb.Endpoint(app="shop", type="web", instance=instance, agent="a1", host=host,
                       port=port, release=1, generation=0)


class FakeScheduler(pbg.ControlServicer):
    """WatchEndpoints only, on 127.0.0.1: the test sends sets; acks are recorded, with a hook
    run the moment each arrives."""

    def __init__(self) -> None:
        self.refuse: grpc.StatusCode | None = None
        self.watches: list[pb.EndpointsWatch] = []
        self.acks: list[int] = []
        self.on_ack: Callable[[int], object] = lambda version: None
        self.version = self.port = 0
        self.queue: asyncio.Queue[pb.EndpointSet] | None = None
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Serve (again on the same port, once it has one)."""
        self.queue = None
        # What the scheduler must allow for formation-lb's keepalive pings (lb/follow.py).
        self.server = grpc.aio.server(options=[
            ("grpc.http2.min_ping_interval_without_data_ms", 5000)])
        pbg.add_ControlServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def WatchEndpoints(self, requests: AsyncIterator[pb.EndpointsRequest],  # noqa: N802
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.EndpointSet]:
        self.watches.append((await anext(requests)).watch)
        if self.refuse is not None:
            await context.abort(self.refuse, "not for you")
        queue = self.queue = asyncio.Queue()
        reader = asyncio.create_task(self._acks(requests))
        try:
            while True:
                yield await queue.get()
        finally:
            reader.cancel()

    async def _acks(self, requests: AsyncIterator[pb.EndpointsRequest]) -> None:
        async for request in requests:
            self.on_ack(request.ack.version)
            self.acks.append(request.ack.version)

    async def send(self, *endpoints: pb.Endpoint) -> int:
        assert await until(lambda: self.queue is not None)
        assert self.queue is not None
        self.version += 1
        self.queue.put_nowait(pb.EndpointSet(version=self.version, endpoints=endpoints))
        return self.version

    async def acked(self, version: int) -> None:
        assert await until(lambda: version in self.acks), (version, self.acks)


@pytest.fixture
async def fake() -> AsyncIterator[FakeScheduler]:
    scheduler = FakeScheduler()
    await scheduler.start()
    yield scheduler
    assert scheduler.server is not None
    await scheduler.server.stop(0)


class Lb:
    """formation-lb as a child process, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, listen: int) -> None:
        self.proc, self.listen = proc, listen
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [asyncio.create_task(self._read(proc.stdout, self.out)),
                        asyncio.create_task(self._read(proc.stderr, self.err))]

    async def _read(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        async for line in stream:
            into.append(line.decode().rstrip("\n"))

    def said(self, pattern: str) -> re.Match[str] | None:
        return next(filter(None, (re.search(pattern, line) for line in self.out)), None)

    async def line(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        assert await until(lambda: self.said(pattern), timeout), pattern
        return self.said(pattern)  # type: ignore[return-value]

    async def haproxy_pid(self) -> int:
        return int((await self.line(r"\(pid (\d+)\)")).group(1))

    async def exit_code(self, timeout: float = 15.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self.readers)
        return code

    async def close(self) -> None:
        """Whatever happened: the process and its HAProxy are gone afterwards (SIGTERM first,
        for formation-lb to remove its directory)."""
        found = self.said(r"\(pid (\d+)\)")
        if self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 15)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for reader in self.readers:
            reader.cancel()
        if found and running(int(found.group(1))):
            os.kill(int(found.group(1)), signal.SIGKILL)
        print("\n".join(self.out + self.err))  # shown if the test failed


StartLb = Callable[..., Awaitable[Lb]]


@pytest.fixture
async def start_lb() -> AsyncIterator[StartLb]:
    """start_lb(scheduler_port, *flags, listen=PORT, **env) -> a running formation-lb (on a
    free port unless told), ended afterwards."""
    started: list[Lb] = []

    async def start(scheduler_port: int, *flags: str, listen: int = 0, **env: str) -> Lb:
        listen = listen or free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lb", "--scheduler", f"127.0.0.1:{scheduler_port}",
            "--listen", f"127.0.0.1:{listen}", "--app", "shop", *flags, cwd=ROOT,
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        started.append(Lb(proc, listen))
        return started[-1]

    yield start
    for lb in started:
        await lb.close()


def admin(workdir: Path, command: str) -> str:
    """One command's reply from HAProxy's runtime API (non-interactive: it closes after)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(workdir / "admin.sock"))
        s.sendall(f"{command}\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply.decode()


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with contextlib.closing(conn):
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()


async def get(port: int, path: str = "/") -> str:
    """A request's body (a new connection each: HAProxy balances each one); status 200."""
    status, body = await asyncio.to_thread(_get, port, path)
    assert status == 200, (status, body)
    return body


async def bodies(port: int, n: int) -> list[str]:
    return [await get(port) for _ in range(n)]


async def test_follows_sets_removes_before_the_ack_leaves_out_lies_and_stops_softly(
        backends: tuple[Backend, Backend], fake: FakeScheduler, start_lb: StartLb) -> None:
    a, b = backends
    metrics = free_port()
    lb = await start_lb(fake.port, "--metrics", f"127.0.0.1:{metrics}")
    hx = await lb.haproxy_pid()
    await fake.acked(await fake.send(ep("web.1", a.port), ep("web.2", b.port)))
    assert fake.watches[0] == pb.EndpointsWatch(app="shop", type="web", acknowledges=True,
                                                name=f"{socket.gethostname()}:{lb.listen}")
    assert set(await bodies(lb.listen, 6)) == {"a", "b"}

    # web.2 leaves while a request to it is in flight: it gets no new request once the
    # removal is acknowledged, and the one in flight completes.
    hits = a.hits, b.hits
    slow = [asyncio.create_task(get(lb.listen, "/slow")) for _ in range(2)]
    assert await until(lambda: (a.hits, b.hits) == (hits[0] + 1, hits[1] + 1))  # one each
    at_ack: list[int] = []
    fake.on_ack = lambda version: at_ack.append(b.hits)
    await fake.acked(await fake.send(ep("web.1", a.port)))
    assert await bodies(lb.listen, 10) == ["a"] * 10 and b.hits == at_ack[-1]
    assert sorted(await asyncio.gather(*slow)) == ["a", "b"]

    # A lying scheduler (or an agent at an address formation-lb cannot use): that endpoint
    # is left out and never reaches HAProxy; the rest of its set is applied and acknowledged.
    v = await fake.send(ep("web.1", a.port), ep("web.2", b.port, host="1.2.3.4\nshutdown"),
                        ep("web.3", b.port))
    await fake.acked(v)
    await lb.line(rf"endpoint set v{v}: 1 of 3 endpoints left out as invalid \(the others "
                  r"are applied\); endpoint 2: not an IP address or a host name: "
                  r"'1\.2\.3\.4\\nshutdown'")
    await lb.line(rf"endpoints v{v}: 2 servers; added web.3-r1-g0.a1$")
    assert set(await bodies(lb.listen, 6)) == {"a", "b"}  # b: as web.3
    state = await asyncio.to_thread(admin, private_dir(hx), "show servers state instances")
    active = {n: k.server.host for n, k in parse_state(state, "instances", 0.0).items()
              if k.admin is Admin.ACTIVE}
    assert active == {"web.1-r1-g0.a1": "127.0.0.1", "web.3-r1-g0.a1": "127.0.0.1"}, state
    assert "1.2.3.4" not in state
    page = (await asyncio.to_thread(_get, metrics, "/metrics"))[1]
    assert "formation_lb_endpoints_left_out 1.0" in page
    assert 'formation_lb_endpoint_sets_total{result="refused"} 0.0' in page

    v = await fake.send(ep("web.1", a.port), ep("web.2", b.port))  # web.2 back, web.3 gone
    await fake.acked(v)
    await lb.line(rf"endpoints v{v}: 2 servers; added web.2-r1-g0.a1; removed web.3-r1-g0.a1")
    assert set(await bodies(lb.listen, 6)) == {"a", "b"}
    page = (await asyncio.to_thread(_get, metrics, "/metrics"))[1]
    assert "formation_lb_endpoints_left_out 0.0" in page
    assert "formation_lb_connected 1.0" in page
    assert not any("HAProxy refused" in line for line in lb.out)

    # The scheduler goes away: HAProxy keeps serving; back, its first set is the whole
    # truth (web.2 is gone from it), and formation-lb follows it.
    assert fake.server is not None
    await fake.server.stop(0)
    await lb.line("lost the endpoints stream")
    assert set(await bodies(lb.listen, 6)) == {"a", "b"}
    await fake.start()
    await fake.acked(await fake.send(ep("web.1", a.port)))
    assert await bodies(lb.listen, 4) == ["a"] * 4

    # SIGTERM: a request in flight completes, HAProxy is gone, and so is its directory.
    before = a.hits
    slow = [asyncio.create_task(get(lb.listen, "/slow"))]
    assert await until(lambda: a.hits > before)
    workdir = private_dir(hx)
    lb.proc.send_signal(signal.SIGTERM)
    assert await lb.exit_code() == 0
    assert await asyncio.gather(*slow) == ["a"]
    assert not running(hx) and not workdir.exists()


async def test_a_removal_is_acknowledged_once_nothing_is_in_flight_to_its_server(
        backends: tuple[Backend, Backend], fake: FakeScheduler, start_lb: StartLb) -> None:
    """The scheduler stops an instance right after the acknowledgement: a request in flight
    to it holds the acknowledgement back (in order: a later set is applied at once but not
    acknowledged either), until it is answered; an idle removal is acknowledged at once."""
    a, b = backends
    lb = await start_lb(fake.port)
    acked_at: dict[int, float] = {}
    fake.on_ack = lambda version: acked_at.setdefault(version, time.monotonic())
    await fake.acked(await fake.send(ep("web.1", a.port), ep("web.2", b.port)))

    sent = time.monotonic()
    idle = await fake.send(ep("web.1", a.port))  # web.2 leaves with nothing in flight
    await fake.acked(idle)
    print(f"idle removal acknowledged {1000 * (acked_at[idle] - sent):.1f} ms after the send")
    assert acked_at[idle] - sent < 0.5
    await fake.acked(await fake.send(ep("web.1", a.port), ep("web.2", b.port)))  # back

    hits = a.hits, b.hits
    slow = [asyncio.create_task(get(lb.listen, "/slow")) for _ in range(2)]
    assert await until(lambda: (a.hits, b.hits) == (hits[0] + 1, hits[1] + 1))  # one each
    busy = await fake.send(ep("web.1", a.port))
    later = await fake.send(ep("web.1", a.port), ep("web.3", a.port))  # removes nothing
    await lb.line(rf"endpoints v{later}: 2 servers; added web.3-r1-g0.a1")  # applied meanwhile
    assert not b.answered and not set(acked_at) & {busy, later}
    await fake.acked(later)
    assert b.answered and acked_at[later] > b.answered[0]
    print(f"acknowledged {1000 * (acked_at[later] - b.answered[0]):.1f} ms after the answer")
    assert acked_at[later] - b.answered[0] < 0.5
    assert busy not in acked_at or acked_at[busy] > b.answered[0]
    assert fake.acks == sorted(fake.acks)
    assert sorted(await asyncio.gather(*slow)) == ["a", "b"]


async def test_a_dead_instance_costs_no_request_and_its_check_takes_it_out(
        backends: tuple[Backend, Backend], fake: FakeScheduler, start_lb: StartLb) -> None:
    """A server that refuses connections but is still up in HAProxy (its check has not failed
    yet): each request that picks it is retried on another server (conn-failure, redispatch);
    HAProxy's own check marks it down within fall x inter (here 2 x 0.3 s)."""
    a, _ = backends
    lb = await start_lb(fake.port, "--check-interval", "0.3")
    await fake.acked(await fake.send(ep("web.1", a.port), ep("web.2", free_port())))
    assert await bodies(lb.listen, 10) == ["a"] * 10
    await lb.line(r"Server instances/web.2-r1-g0.a1 is DOWN", timeout=3)


def test_the_configuration_is_valid_for_this_haproxy(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config("127.0.0.1", free_port(), str(tmp_path / "admin.sock"), 1000))
    checked = subprocess.run([str(haproxy_binary()), "-c", "-f", str(path)], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "WARNING" not in checked.stderr + checked.stdout


async def test_without_haproxy_one_line_and_exit_1(start_lb: StartLb) -> None:
    lb = await start_lb(1, HAPROXY_BIN="/nonexistent/haproxy")
    assert await lb.exit_code() == 1
    assert len(lb.err) == 1 and "apt-get install haproxy" in lb.err[0]


async def test_a_refusal_before_any_set_is_exit_1_and_haproxy_is_stopped(
        fake: FakeScheduler, start_lb: StartLb) -> None:
    fake.refuse = grpc.StatusCode.PERMISSION_DENIED
    lb = await start_lb(fake.port)
    hx = await lb.haproxy_pid()
    assert await lb.exit_code() == 1
    assert "not for you (PERMISSION_DENIED)" in lb.err[-1] and len(lb.err) == 1
    assert not running(hx)


async def test_haproxy_dying_ends_formation_lb_and_formation_lb_dying_ends_haproxy(
        start_lb: StartLb) -> None:
    lb = await start_lb(1)  # no scheduler there: it keeps trying meanwhile
    os.kill(await lb.haproxy_pid(), signal.SIGKILL)
    assert await lb.exit_code() == 1
    assert lb.err == ["formation-lb: HAProxy exited by itself with status -9"]
    lb = await start_lb(1)
    hx = await lb.haproxy_pid()
    workdir = private_dir(hx)
    lb.proc.kill()  # no chance to clean up: the kernel kills HAProxy (PR_SET_PDEATHSIG)
    assert await until(lambda: not running(hx)) and workdir.is_dir()
    lb = await start_lb(1)  # the next one removes what the killed one left
    await lb.haproxy_pid()
    assert not workdir.exists()


async def test_a_taken_port_is_haproxys_own_words_and_exit_1(start_lb: StartLb) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        lb = await start_lb(1, listen=taken.getsockname()[1])
        assert await lb.exit_code() == 1
    assert any("Address already in use" in line for line in lb.err)
    assert lb.err[-1].startswith("formation-lb: HAProxy")
