"""A tiny asyncio HTTP/1.0 server for /metrics (and the scheduler's service discovery).

Both daemons use it; routes are plain functions returning (content type, body), called on the
event loop, so they read state without locks.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from common.net import split_hostport

log = logging.getLogger("http")
Route = Callable[[], tuple[str, bytes]]


def metrics_route() -> tuple[str, bytes]:
    return CONTENT_TYPE_LATEST, generate_latest(REGISTRY)


async def serve(listen: str, routes: dict[str, Route]) -> asyncio.AbstractServer:
    """Serve GET on `routes` at listen (HOST:PORT)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            route = routes.get(path)
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif route is None:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            else:
                status = "200 OK"
                ctype, body = route()
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - a bad scrape must never take the daemon down
            log.exception("error serving HTTP request")
        finally:
            writer.close()

    host, port = split_hostport(listen)
    return await asyncio.start_server(handle, host, port)
