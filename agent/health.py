"""Health checks of one instance: tcp (connect to $PORT), http (GET a path on $PORT, 2xx/3xx),
exec (a command, exit 0). Probes return (healthy, reason); the runner decides what follows.

A web type with no check gets a tcp check on its port, like Heroku's boot check.
"""
from __future__ import annotations

import asyncio
import os
import signal

from common.appdef import HealthCheck


def _self_connected(writer: asyncio.StreamWriter) -> bool:
    """A connect to a local port nobody listens on can connect the socket to itself when the
    kernel picks that same port as its source (TCP simultaneous open): that is no server."""
    return writer.get_extra_info("sockname") == writer.get_extra_info("peername")


async def probe(check: HealthCheck, port: int, env: dict[str, str], cwd: str
                ) -> tuple[bool, str]:
    try:
        return await asyncio.wait_for(_probe(check, port, env, cwd), check.timeout or 2.0)
    except asyncio.TimeoutError:
        return False, f"{check.type} check timed out after {check.timeout or 2.0:g}s"


async def _probe(check: HealthCheck, port: int, env: dict[str, str], cwd: str
                 ) -> tuple[bool, str]:
    if check.type == "tcp":
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            return False, f"tcp check: port {port}: {e.strerror or e}"
        writer.close()
        if _self_connected(writer):
            return False, f"tcp check: nothing listens on port {port}"
        return True, ""
    if check.type == "http":
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            return False, f"http check: port {port}: {e.strerror or e}"
        if _self_connected(writer):
            writer.close()
            return False, f"http check: nothing listens on port {port}"
        try:
            writer.write(f"GET {check.path or '/'} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                         f"User-Agent: formation-health\r\n\r\n".encode())
            await writer.drain()
            status = (await reader.readline()).decode("latin-1").split()
        except OSError as e:
            return False, f"http check: {e}"
        finally:
            writer.close()
        if len(status) >= 2 and status[1].isdigit() and 200 <= int(status[1]) < 400:
            return True, ""
        code = status[1] if len(status) >= 2 else "no answer"
        return False, f"http check: GET {check.path or '/'} -> {code}"
    if check.type == "exec":
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", check.command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env={**env, "PORT": str(port)}, cwd=cwd, start_new_session=True)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            raise
        return (code == 0), ("" if code == 0 else f"exec check exited with code {code}")
    return True, ""
