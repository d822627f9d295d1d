"""Applies endpoint sets to HAProxy's backend through its runtime API, and tends what a set
leaves behind: servers in maintenance deleted once their connections are gone, failed
changes retried.

Order within a set: adds and re-enables first (a set that replaces every server never leaves
HAProxy with none), then removals to maintenance. `apply` gives the servers a set took out of
balancing once every removal has taken effect: HAProxy answered the command, which changes
the balancing at once (server.c srv_update_status runs within the command), so no new request
reaches a removed instance. It may be acknowledged (the scheduler then stops the instance)
once those servers also have nothing in flight: `busy` tells which still have (drain.py
waits). An add that fails does not hold the acknowledgement back (the instances it concerns
are not being stopped); it is logged, counted and retried in the background with backoff.

Invalid endpoints are left out of a set (servers.py), with one warning per set: how many, and
why the first was. HAProxy is compared with the wanted servers by IP (`show servers state`
gives IPs): a DNS host is resolved once, when it first appears, and its IP stands for it.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from lb import drain, servers
from lb.instruments import LEFT_OUT, RUNTIME_ERRORS, SERVERS, SETS, VERSION
from lb.runtime import Reply, Runtime, Session, Unavailable
from lb.servers import Admin, Checks, Known, Server
from proto import formation_pb2 as pb

log = logging.getLogger("lb")
TEND_EVERY = 0.5      # seconds between attempts to delete servers in maintenance
FORCE_AFTER = 30.0    # seconds in maintenance after which its sessions are cut, then deleted
RETRY_FIRST, RETRY_MOST = 1.0, 30.0  # backoff of retrying failed changes
RESOLVE_TIMEOUT = 2.0  # seconds to resolve an endpoint's host name
SHOWN = 5             # server names a log line lists before "and N more"


class Balancer:
    def __init__(self, runtime: Runtime, backend: str, checks: Checks, app: str,
                 ptype: str) -> None:
        self.runtime = runtime
        self.backend = backend
        self.checks = checks
        self.app, self.ptype = app, ptype
        self.known: dict[str, Known] = {}     # what HAProxy has, by server name
        self.want: dict[str, Server] = {}     # the last set accepted
        self.ips: dict[str, str] = {}         # host names of `want` resolved
        self.dirty = False        # `known` may be wrong: read HAProxy's state before changing
        self.incomplete = False   # some change failed: retry
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST
        self._work = asyncio.Event()  # wakes tend(): servers to delete, changes to retry
        self._cut: set[str] = set()   # servers whose sessions were cut (said once)
        self._removed: set[str] = set()  # put in maintenance since the last set applied
        for state in Admin:
            SERVERS.labels(state.value).set(0)
        for result in ("applied", "refused", "failed"):
            SETS.labels(result)

    async def apply(self, endpoints: pb.EndpointSet) -> list[str] | None:
        """Make HAProxy serve this set: the servers taken out of balancing since the last set
        applied, once every removal took effect (to drain before the acknowledgement); None
        if it may not be acknowledged (see the docstring)."""
        try:
            want, left_out = servers.wanted(endpoints.endpoints, self.app, self.ptype)
        except servers.BadSet as e:
            log.warning("endpoint set v%d refused (HAProxy keeps its %s): %s",
                        endpoints.version, _servers(self.count(Admin.ACTIVE)), e)
            SETS.labels("refused").inc()
            return None
        LEFT_OUT.set(len(left_out))
        if left_out:
            log.warning("endpoint set v%d: %d of %d endpoints left out as invalid (the "
                        "others are applied); %s%s", endpoints.version, len(left_out),
                        len(endpoints.endpoints), "first " if len(left_out) > 1 else "",
                        left_out[0])
        await self._resolve(want)
        self.want = want
        try:
            async with self.runtime.session() as s:
                done = await self._converge(s, f"endpoints v{endpoints.version}: ")
        except Unavailable as e:
            log.warning("endpoint set v%d not applied: %s", endpoints.version, e)
            RUNTIME_ERRORS.inc()
            self.dirty = True  # a command may or may not have taken effect
            self._failed()
            done = False
        SETS.labels("applied" if done else "failed").inc()
        if not done:
            return None
        VERSION.set(endpoints.version)
        # (with those a failed set or a background retry took out, for no removal to be
        # acknowledged unseen)
        taken, self._removed = sorted(self._removed), set()
        return taken

    async def busy(self, names: set[str]) -> set[str]:
        """Which of these servers still have requests in flight (sessions or queued): not one
        HAProxy no longer has, nor one wanted again; Unavailable if HAProxy does not tell."""
        async with self.runtime.session() as s:
            reply = await s.run(drain.stat_command(self.backend))
        try:
            if not reply.ok:
                raise ValueError(reply.message())
            flight = drain.parse_stat(reply.text, self.backend)
        except ValueError as e:
            raise Unavailable(f"reading HAProxy's stats: {e}") from None
        return {n for n in names if n not in self.want and flight.get(n, 0) > 0}

    def count(self, admin: Admin) -> int:
        return sum(1 for k in self.known.values() if k.admin is admin)

    async def _resolve(self, want: dict[str, Server]) -> None:
        """Resolve the host names HAProxy is not yet using (a dynamic server is never resolved
        by HAProxy itself); a name that does not resolve leaves its server out for now."""
        hosts = {s.host for name, s in want.items() if not servers.is_ip(s.host)}
        self.ips = {h: ip for h, ip in self.ips.items() if h in hosts}
        new = sorted(hosts - self.ips.keys())
        for host, ip in zip(new, await asyncio.gather(*map(_resolve, new)), strict=True):
            if ip is None:
                RUNTIME_ERRORS.inc()
                log.warning("host %s of an endpoint does not resolve: its servers wait", host)
            else:
                self.ips[host] = ip

    async def _read_back(self, s: Session) -> None:
        """What HAProxy has, read from it (after a refusal, formation-lb's view may be wrong)."""
        reply = await s.run(f"show servers state {self.backend}")
        try:
            if not reply.ok:
                raise ValueError(reply.message())
            self.known = servers.parse_state(reply.text, self.backend, time.monotonic())
        except ValueError as e:
            raise Unavailable(f"reading HAProxy's servers: {e}") from None
        self.dirty = False

    async def _converge(self, s: Session, prefix: str = "") -> bool:
        """Change HAProxy to serve `want`; True if every removal took effect. Logs a line
        (always if prefix is given, else only if something changed)."""
        if self.dirty:
            await self._read_back(s)
        # Compared as HAProxy has them: by IP (a read-back gives IPs, never names).
        plan = servers.plan(self.known, servers.resolved(self.want, self.ips))
        b, now = self.backend, time.monotonic()
        adds: list[tuple[Server, str]] = []
        failed = 0
        for server in plan.add + plan.move:
            if servers.is_ip(server.host):
                adds.append((server, server.host))
            else:  # its name did not resolve (yet)
                failed += 1
        moved = set(plan.move)
        groups = ([servers.move_commands(b, x.name, ip, x.port) if x in moved else
                   servers.add_commands(b, x.name, ip, x.port, self.checks) for x, ip in adds]
                  + [servers.enable_commands(b, name) for name in plan.enable]
                  + [[servers.remove_command(b, name)] for name in plan.remove])
        # All sent in one go, in this order; the replies cut back into the same groups.
        flat = await s.run_all([command for group in groups for command in group])
        replies, at = [], 0
        for group in groups:
            replies.append(flat[at:at + len(group)])
            at += len(group)
        for (server, _), got in zip(adds, replies[:len(adds)], strict=True):
            if not self._refused(got):
                self.known[server.name] = Known(server, Admin.ACTIVE)
                continue
            failed += 1
            if got[0].ok:  # out of balancing: added and not enabled, or moved half-way
                self.known[server.name] = Known(self.known[server.name].server
                                                if server in moved else server,
                                                Admin.REMOVING, now)
        del replies[:len(adds)]
        for name, got in zip(plan.enable, replies[:len(plan.enable)], strict=True):
            if self._refused(got):
                failed += 1
            else:
                self.known[name].admin = Admin.ACTIVE
        removed_ok = 0
        for name, (reply,) in zip(plan.remove, replies[len(plan.enable):], strict=True):
            if reply.ok:
                self.known[name] = Known(self.known[name].server, Admin.REMOVING, now)
                self._removed.add(name)
            elif _absent(reply):  # gone already: nothing to take out of balancing
                del self.known[name]
            else:
                self._error(reply)
                continue
            removed_ok += 1
        self._show()
        if plan or prefix:
            log.info("%s%s%s%s", prefix, _servers(self.count(Admin.ACTIVE)),
                     _listed("; added", [s.name for s in plan.add + plan.move] +
                             list(plan.enable)), _listed("; removed", list(plan.remove)))
        if failed or removed_ok < len(plan.remove):
            self._failed()
        else:
            self.incomplete = False
            self._retry_delay = RETRY_FIRST
        if plan.remove:
            self._work.set()
        return removed_ok == len(plan.remove)

    def _refused(self, got: list[Reply]) -> bool:
        """Was any command of a group refused? The first refusal is logged and counted (the
        rest of the group follows from it)."""
        bad = next((r for r in got if not r.ok), None)
        if bad is not None:
            self._error(bad)
        return bad is not None

    def _error(self, reply: Reply) -> None:
        RUNTIME_ERRORS.inc()
        log.warning("HAProxy refused `%s`: %s", reply.command, reply.message())
        self.dirty = True  # what formation-lb believes may be wrong: read it before the retry

    def _failed(self) -> None:
        if not self.incomplete:
            self._retry_at = time.monotonic() + self._retry_delay
        self.incomplete = True
        self._work.set()

    def _show(self) -> None:
        for state in Admin:
            SERVERS.labels(state.value).set(self.count(state))

    async def tend(self) -> None:
        """Forever: delete servers in maintenance that are no longer wanted once HAProxy lets
        (no connections left; after FORCE_AFTER their sessions are cut first), and retry
        failed changes with backoff."""
        while True:
            if not (self.count(Admin.REMOVING) or self.incomplete):
                self._work.clear()
                await self._work.wait()
            await asyncio.sleep(TEND_EVERY)
            retry = self.incomplete and time.monotonic() >= self._retry_at
            if not (retry or self.count(Admin.REMOVING)):
                continue
            if retry:
                await self._resolve(self.want)  # names that did not resolve may now
            try:
                async with self.runtime.session() as s:
                    if retry:
                        self._retry_delay = min(self._retry_delay * 2, RETRY_MOST)
                        self.incomplete = False
                        await self._converge(s)
                    await self._reap(s)
            except Unavailable as e:
                RUNTIME_ERRORS.inc()
                log.warning("%s", e)
                self.dirty = True
                self._failed()
                await asyncio.sleep(self._retry_delay)

    async def _reap(self, s: Session) -> None:
        due = [(name, force) for name, force in servers.due_for_delete(
            self.known, time.monotonic(), FORCE_AFTER) if name not in self.want]
        for name, force in due:  # (one wanted again is enabled by the next converge)
            if force and name not in self._cut:
                self._cut.add(name)
                log.warning("server %s still has connections %.0fs after it left the "
                            "endpoints: cutting them", name, FORCE_AFTER)
        replies = await s.run_all([command for name, force in due for command in
                                   servers.delete_commands(self.backend, name, force)])
        deleted = [r for r in replies if r.command.startswith("del server ")]
        for (name, _), reply in zip(due, deleted, strict=True):
            if reply.ok or _absent(reply):
                del self.known[name]
                self._cut.discard(name)
            elif "still has connections" not in reply.text:
                self._error(reply)
        if due:
            self._show()


async def _resolve(host: str) -> str | None:
    """The first address of host, checked as any endpoint's; None if none in time."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM)
        return servers.check_ip(str(infos[0][4][0]))
    except (OSError, TimeoutError, ValueError, IndexError):
        return None


def _absent(reply: Reply) -> bool:
    """HAProxy has no such server: nothing left to take out of balancing, or to delete."""
    return "No such server" in reply.text


def _servers(n: int) -> str:
    return f"{n} server" if n == 1 else f"{n} servers"


def _listed(label: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{label} {', '.join(names[:SHOWN])}{more}"
