"""Health checks of one instance: tcp (connect to $PORT), http (GET a path on $PORT, 2xx/3xx),
exec (a command, exit 0). Probes return (healthy, reason); the machine decides what follows.
The exec check's process is spawned through the launcher like an instance, in a group (and
cgroup) of its own, killed once it exits, times out or is no longer wanted.

A web type with no check gets a tcp check on its port, like Heroku's boot check.
"""
from __future__ import annotations

import asyncio
import signal

from agent.launcher import Launcher
from common.appdef import HealthCheck


def _self_connected(writer: asyncio.StreamWriter) -> bool:
    """A connect to a local port nobody listens on can connect the socket to itself when the
    kernel picks that same port as its source (TCP simultaneous open): that is no server."""
    return writer.get_extra_info("sockname") == writer.get_extra_info("peername")


async def probe(check: HealthCheck, port: int, env: dict[str, str], cwd: str,
                launcher: Launcher) -> tuple[bool, str]:
    """Check once, within check.timeout."""
    try:
        return await asyncio.wait_for(_probe(check, port, env, cwd, launcher),
                                      check.timeout or 2.0)
    except TimeoutError:
        return False, f"{check.type} check timed out after {check.timeout or 2.0:g}s"


async def _probe(check: HealthCheck, port: int, env: dict[str, str], cwd: str,
                 launcher: Launcher) -> tuple[bool, str]:
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
        return await _exec(check.command, {**env, "PORT": str(port)}, cwd, launcher)
    return True, ""


async def _exec(command: str, env: dict[str, str], cwd: str, launcher: Launcher
                ) -> tuple[bool, str]:
    child = await launcher.spawn(["/bin/sh", "-c", command], env, cwd, capture=False,
                                 name=f"{env.get('FORMATION_APP', '')}."
                                      f"{env.get('FORMATION_INSTANCE', '')}-check")
    try:
        code = await child.wait()
    except asyncio.CancelledError:  # timed out, or the instance is gone
        launcher.kill_group(child.pid, signal.SIGKILL)
        await child.wait()
        raise
    finally:
        launcher.kill_group(child.pid, signal.SIGKILL)  # anything it left behind
        child.close()
        launcher.forget_group(child.pid)
    return (code == 0), ("" if code == 0 else f"exec check exited with code {code}")
