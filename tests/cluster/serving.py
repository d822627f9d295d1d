"""The zero-downtime oracle: how many copies of a type answer HTTP, sampled every 20 ms.

`Serving(cluster, ptype="web")` (a context manager) asks the scheduler for the type's instances
at every sample and keeps every endpoint (host:port) it has ever seen, so an old copy that the
scheduler no longer lists (one handing over to a new copy) is still probed until it stops
answering. A sample probes all of them at once (GET /healthz, 200 within PROBE_TIMEOUT) and
counts those that answer: `fewest` is the smallest count of the whole run, `drops` the times
(seconds from the start) and counts of the samples below `floor`, if one was given.
"""
from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.states import InstanceState

PERIOD = 0.02        # seconds between samples
PROBE_TIMEOUT = 0.5  # seconds a copy may take to answer and still count as serving


def answers(host: str, port: int, path: str = "/healthz") -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


class Serving:
    def __init__(self, cluster: Any, ptype: str = "web", app: str = "default",
                 floor: int | None = None) -> None:
        self.cluster, self.ptype, self.app, self.floor = cluster, ptype, app, floor
        self.endpoints: set[tuple[str, int]] = set()
        self.fewest: int | None = None
        self.most = 0
        self.samples = 0
        self.last: int | None = None  # the newest sample's count
        self.drops: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="serving")
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="probe")
        self.error: BaseException | None = None

    def _learn(self) -> None:
        try:
            listed = self.cluster.client.instances(self.app)
        except Exception:  # noqa: BLE001 - the scheduler is down (a test restarts it): the
            return         # copies already seen are still probed
        for i in listed:
            if i.id.rpartition(".")[0] == self.ptype and i.port and \
                    i.state == InstanceState.RUNNING:
                host = self.cluster.hosts[i.agent].address if i.agent in self.cluster.hosts \
                    else "127.0.0.1"
                self.endpoints.add((host, i.port))

    def sample(self) -> int:
        """Probe every endpoint seen so far, at once; how many answered (the sampler's own
        thread calls it; others read `last`)."""
        self._learn()
        probes = [self._pool.submit(answers, h, p) for h, p in sorted(self.endpoints)]
        return sum(f.result() for f in probes)

    def _run(self) -> None:
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                tick = time.monotonic()
                n = self.sample()
                self.samples += 1
                self.last = n
                self.fewest = n if self.fewest is None else min(self.fewest, n)
                self.most = max(self.most, n)
                if self.floor is not None and n < self.floor:
                    self.drops.append((round(tick - start, 3), n))
                self._stop.wait(max(0.0, PERIOD - (time.monotonic() - tick)))
        except BaseException as e:  # noqa: BLE001 - reported by stop(), not lost in a thread
            self.error = e

    def __enter__(self) -> Serving:
        self.sample()  # the endpoints there before the change
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.error is not None:
            raise AssertionError(f"the serving sampler failed: {self.error!r}")
