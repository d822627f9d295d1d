"""A client that sends requests continuously through one address, as users would: some
threads keep one connection alive across requests, others open a new connection for each;
every other request is a POST, which no load balancer may retry once a server may have acted
on it. Every request is recorded (when, whether it got a 200, and who answered)."""
from __future__ import annotations

import http.client
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctl.localcluster import Launch, Part, wait_port

if TYPE_CHECKING:
    from tests.cluster.harness import Cluster


def launcher(c: Cluster) -> Launch:
    """How a test starts a part beside the cluster: its output in the cluster's directory,
    tagged with the run (the teardown's leak check finds it, and HAProxy under it)."""
    return Launch(stdout=lambda name: open(os.path.join(c.tmp, f"{name}.log"), "a"),  # noqa: SIM115
                  env={"FTEST_RUN": c.run_id})


def start_lb(c: Cluster, port: int, app: str = "default", name: str = "lb") -> Part:
    """formation-lb on 127.0.0.1:port in front of the app's web type, listening."""
    part = launcher(c).lb(c.listen, f"127.0.0.1:{port}", app, "web", tls=c.tls_for("lb", name),
                          name=name)
    wait_port("127.0.0.1", port, 20, part.proc)
    return part


@dataclass(frozen=True)
class Result:
    at: float       # monotonic time the request was sent
    ok: bool
    said: str       # the body's first line ("Hello from web.3"), or what went wrong


class Load:
    def __init__(self, host: str, port: int, keep_alive: int = 2, fresh: int = 2,
                 timeout: float = 5.0, posts: bool = True) -> None:
        self.host, self.port, self.timeout, self.posts = host, port, timeout, posts
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(True,), daemon=True)
                         for _ in range(keep_alive)]
        self._threads += [threading.Thread(target=self._run, args=(False,), daemon=True)
                          for _ in range(fresh)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def _run(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        post = False
        while not self._stop.is_set():
            post = self.posts and not post
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            at = time.monotonic()
            try:
                conn.request("POST" if post else "GET", "/", body=b"x" if post else None,
                             headers={} if keep_alive else {"Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                result = Result(at, response.status == 200,
                                body.splitlines()[0] if response.status == 200 and body
                                else f"HTTP {response.status}: {body[:80]!r}")
                if not keep_alive or response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                result = Result(at, False, f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.results.append(result)
        if conn is not None:
            conn.close()

    # ---- what was seen -------------------------------------------------------------------

    def mark(self) -> float:
        return time.monotonic()

    def since(self, start: float, end: float | None = None) -> list[Result]:
        with self._lock:
            return [r for r in self.results
                    if r.at >= start and (end is None or r.at < end)]

    def failures(self, start: float, end: float | None = None) -> list[Result]:
        return [r for r in self.since(start, end) if not r.ok]

    def answered_by(self, start: float, end: float | None = None) -> set[str]:
        return {r.said.rsplit(" ", 1)[-1] for r in self.since(start, end) if r.ok}

    def count(self) -> int:
        with self._lock:
            return len(self.results)
