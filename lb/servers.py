"""Pure: an endpoint set from the scheduler checked and made into HAProxy servers, the diff of
the servers HAProxy has against the ones wanted, and the runtime-API commands of each change.

The scheduler is a peer that may lie (or be an impostor with a stolen certificate), and what it
says ends up in a text protocol where a newline or a `;` starts another command: every field
that reaches a command is checked against a strict pattern here first. An endpoint that fails
a check is left out (its server is not added, or is removed like any server the set does not
list) and the rest of the set is applied and acknowledged as usual: one agent advertising an
address formation-lb cannot use must not freeze the whole edge (the scheduler resends the same
set until it is acknowledged, and holds every deregistration meanwhile). The balancer logs one
line per set with how many were left out and why the first was, and shows the count in
formation_lb_endpoints_left_out. Only a set of more than MAX_ENDPOINTS endpoints is refused
whole (HAProxy keeps the servers it has).

Hosts are compared as HAProxy has them: `show servers state` gives IPs, so a wanted server
named by a DNS host is compared with its resolved IP (`resolved`), else every DNS-named server
would look moved after each read-back.

A server's life in HAProxy (its name: instance, release, generation and agent,
`web.3-r4-g0.agent-2`: during a drain or a move the same copy runs on two agents at once):

    (absent) --add--> ACTIVE --not wanted--> REMOVING --no connections left--> (absent)
                        ^                       |           (del server)
                        '-----wanted again------'  (enabled again, never added twice)

REMOVING is HAProxy's maintenance state: no new requests; the ones in flight finish.
"""
from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.names import InvalidName, check_name, split_instance_id
from proto import formation_pb2 as pb

# In one set: a type has at most 10,000 instances (common/names.py); a rollout's surge adds
# up to as many again (max_surge is at most 100 %), and a copy being moved by a drain is listed
# twice (old agent and new). 30,000 covers all of that with room; the message-size limit of
# follow.py is sized for this many endpoints with the longest fields.
MAX_ENDPOINTS = 30_000
MAX_HOST = 253          # a DNS name's longest text form
_IPV4 = re.compile(r"[0-9.]{7,15}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")  # no `%zone`: its text is free-form
# A host name's label: letters, digits, '-' inside, and '_' (not valid DNS, but common in
# container host names, which getaddrinfo resolves from /etc/hosts); nothing else reaches it.
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# HAProxy's own rule for a server name is this set; ours are narrower still.
SERVER_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
# The admin-state bits of `show servers state` that mean maintenance (server-t.h: forced,
# inherited, configured, resolution, DNS-hostname maintenance).
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x80


class BadSet(ValueError):
    """An endpoint set refused whole, with a one-line reason."""


class Admin(enum.Enum):
    ACTIVE = "active"      # added and enabled: balanced to while its checks pass
    REMOVING = "removing"  # in maintenance: no new requests; deleted once it has no connections


@dataclass(frozen=True, order=True)
class Server:
    """One server as wanted: its HAProxy name, and where it listens (host: an IP in canonical
    form, or a DNS name that the shell resolves before HAProxy is told)."""
    name: str
    host: str
    port: int


@dataclass
class Known:
    """A server HAProxy has, as far as formation-lb knows (its host an IP, as HAProxy has
    it: see `resolved`)."""
    server: Server
    admin: Admin
    since: float = 0.0  # when it went to maintenance (monotonic seconds), while REMOVING


@dataclass(frozen=True)
class Checks:
    """HAProxy's active health check of every server: a TCP connect each `inter` seconds;
    down after `fall` failures, up after `rise` successes."""
    inter: float = 1.0
    fall: int = 2
    rise: int = 1


@dataclass(frozen=True)
class Plan:
    """What to change so HAProxy has exactly the wanted servers."""
    add: tuple[Server, ...] = ()     # unknown names: add, enable its check, enable it
    enable: tuple[str, ...] = ()     # REMOVING, wanted again at the same address
    move: tuple[Server, ...] = ()    # known by name at another address: a new address
    remove: tuple[str, ...] = ()     # ACTIVE, not wanted: to maintenance

    def __bool__(self) -> bool:
        return bool(self.add or self.enable or self.move or self.remove)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_ip(text: str, listen: bool = False) -> str:
    """An IP literal in canonical form; ValueError for anything else, or for an address no
    server can have (0.0.0.0 is HAProxy's 'the client's own destination'), unless it is one
    to `listen` on."""
    if not (_IPV4.fullmatch(text) or _IPV6.fullmatch(text)):
        raise ValueError(f"not an IP address: {_shown(text)}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {_shown(text)}") from None
    if not listen and (ip.is_unspecified or ip.is_multicast):
        raise ValueError(f"not an address a server can have: {_shown(text)}")
    return str(ip)


def check_host(text: str, listen: bool = False) -> str:
    """An IP literal (made canonical) or a host name of letters, digits, '-', '_' and '.'
    (lowercased; a trailing '.' dropped)."""
    if _IPV4.fullmatch(text) or (_IPV6.fullmatch(text) and ":" in text):
        return check_ip(text, listen)
    name = text[:-1] if text.endswith(".") else text
    if (not name or len(name) > MAX_HOST or not name.isascii()
            or not all(_LABEL.fullmatch(label) for label in name.split("."))):
        raise ValueError(f"not an IP address or a host name: {_shown(text)}")
    return name.lower()


def address(host: str, port: int) -> str:
    """`HOST:PORT` as HAProxy reads it, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_name(instance: str, release: int, generation: int, agent: str = "") -> str:
    """`web.3`, 4, 0, `agent-2` -> `web.3-r4-g0.agent-2`: each copy of an instance is a server
    of its own, and so is the copy a drain or a move starts on another agent beside it (the
    same instance, release and generation: it must not replace the old one in place, which
    would let the old copy be stopped with requests in flight)."""
    name = f"{instance}-r{release}-g{generation}"
    return f"{name}.{agent}" if agent else name


def wanted(endpoints: Iterable[pb.Endpoint], app: str, ptype: str
           ) -> tuple[dict[str, Server], list[str]]:
    """The servers a set asks for, by name, and why each endpoint left out was (`endpoint N:
    reason`, one line each): one that is not valid or not of the watched app and type. BadSet
    (the whole set refused) only if there are more than MAX_ENDPOINTS endpoints. An endpoint
    named twice counts once (the first valid one)."""
    out: dict[str, Server] = {}
    left_out: list[str] = []
    for i, e in enumerate(endpoints):
        if i >= MAX_ENDPOINTS:
            raise BadSet(f"more than {MAX_ENDPOINTS} endpoints in one set")
        try:
            server = endpoint_server(e, app, ptype)
        except ValueError as err:
            left_out.append(f"endpoint {i + 1}: {err}")
            continue
        out.setdefault(server.name, server)
    return out, left_out


def endpoint_server(e: pb.Endpoint, app: str, ptype: str) -> Server:
    """One endpoint as a server; ValueError with a one-line reason."""
    try:
        check_name("app", e.app)
        check_name("process type", e.type)
        etype, _ = split_instance_id(e.instance)
        if e.agent:
            check_name("agent", e.agent)
    except InvalidName as err:
        raise ValueError(str(err)) from None
    if (app and e.app != app) or (ptype and e.type != ptype) or etype != e.type:
        raise ValueError(f"instance {e.app}/{e.instance} of type {e.type} is not one of "
                         f"{app or '*'}/{ptype or '*'}")
    if not 1 <= e.port <= 65535:
        raise ValueError(f"port {e.port} of {e.instance} is not from 1 to 65535")
    if e.release < 0 or e.generation < 0:
        raise ValueError(f"negative release or generation of {e.instance}")
    name = server_name(e.instance, e.release, e.generation, e.agent)
    if not SERVER_NAME.fullmatch(name):  # cannot happen with the checks above: kept as a net
        raise ValueError(f"unusable server name {_shown(name)}")
    return Server(name, check_host(e.host), e.port)


def resolved(want: Mapping[str, Server], ips: Mapping[str, str]) -> dict[str, Server]:
    """The wanted servers as HAProxy has them: each DNS host replaced by its IP in `ips` (one
    that has none stays a name: it cannot be added or moved yet)."""
    return {name: Server(name, ips[s.host], s.port) if s.host in ips else s
            for name, s in want.items()}


def plan(known: Mapping[str, Known], want: Mapping[str, Server]) -> Plan:
    """The changes that make `known` into `want` (both by server name), sorted by name. Hosts
    are compared as text: give `want` through `resolved` (`known` holds IPs)."""
    add, enable, move = [], [], []
    for name in sorted(want):
        have = known.get(name)
        if have is None:
            add.append(want[name])
        elif have.server != want[name]:
            move.append(want[name])
        elif have.admin is Admin.REMOVING:
            enable.append(name)
    remove = [name for name in sorted(known)
              if name not in want and known[name].admin is Admin.ACTIVE]
    return Plan(tuple(add), tuple(enable), tuple(move), tuple(remove))


def add_commands(backend: str, name: str, ip: str, port: int, checks: Checks) -> list[str]:
    """A new server, checked, then enabled. A dynamic server starts in maintenance and takes
    nothing from default-server, so its check settings are all on its own line. Leaving
    maintenance with its check enabled, HAProxy counts it up at once ("start OK but check
    immediately"): the scheduler lists only instances that passed their health check."""
    ms = max(1, round(checks.inter * 1000))
    # A dynamic server keeps no idle connection to its instance unless told to (2.6: its
    # pool-max-conn is 0, a static server's -1): every request would open a new one, at less
    # than half the requests/s of the same server in the configuration (bench/traffic.py).
    return [f"add server {backend}/{name} {address(ip, port)} check inter {ms}ms "
            f"fall {checks.fall} rise {checks.rise} pool-max-conn -1 pool-purge-delay 5s",
            f"enable health {backend}/{name}",
            f"enable server {backend}/{name}"]


def move_commands(backend: str, name: str, ip: str, port: int) -> list[str]:
    return [f"set server {backend}/{name} state maint",
            f"set server {backend}/{name} addr {ip} port {port}",
            f"set server {backend}/{name} state ready"]


def enable_commands(backend: str, name: str) -> list[str]:
    """Out of maintenance again, its check on (it may not be, if an add failed half-way)."""
    return [f"enable health {backend}/{name}", f"set server {backend}/{name} state ready"]


def remove_command(backend: str, name: str) -> str:
    """No new requests (nor checks); the ones in flight finish; its idle connections close."""
    return f"set server {backend}/{name} state maint"


def delete_commands(backend: str, name: str, force: bool) -> list[str]:
    """Delete a server in maintenance; HAProxy refuses while it still has connections, which
    `force` cuts first."""
    cut = [f"shutdown sessions server {backend}/{name}"] if force else []
    return cut + [f"del server {backend}/{name}"]


def due_for_delete(known: Mapping[str, Known], now: float, force_after: float
                   ) -> list[tuple[str, bool]]:
    """The REMOVING servers to try deleting now, each with whether to cut its sessions first
    (in maintenance for longer than force_after seconds)."""
    return [(name, now - k.since >= force_after) for name, k in sorted(known.items())
            if k.admin is Admin.REMOVING]


def parse_state(text: str, backend: str, now: float) -> dict[str, Known]:
    """`show servers state BACKEND` (format 1) as known servers; ValueError if it is not that
    format. Fields: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
    srv_port (the 19th)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise ValueError(f"not format 1 of show servers state: {_shown(text[:60])}")
    out: dict[str, Known] = {}
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        f = line.split()
        if len(f) < 19 or f[1] != backend:
            continue
        try:
            server = Server(f[3], check_ip(f[4]), int(f[18]))
            admin = int(f[6])
        except ValueError:
            raise ValueError(f"unexpected servers state line: {_shown(line)}") from None
        out[f[3]] = (Known(server, Admin.REMOVING, now) if admin & _MAINT_BITS
                     else Known(server, Admin.ACTIVE))
    return out


def _shown(text: str) -> str:
    """A value in a message: quoted and escaped (never a raw newline), and short."""
    return repr(text) if len(text) <= 70 else repr(text[:64]) + "…"
