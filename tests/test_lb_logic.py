"""formation-lb's pure parts (lb/servers.py, lb/drain.py's bookkeeping, and how lb/runtime.py
reads HAProxy's replies) as table tests and hypothesis properties. No I/O: the replies are
HAProxy 2.6's own, captured."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb import balancer, drain, follow, servers
from lb.balancer import Balancer
from lb.haproxy import config
from lb.instruments import LEFT_OUT, RUNTIME_ERRORS
from lb.runtime import COMMAND, Reply, Unavailable, succeeded
from lb.servers import Admin, BadSet, Checks, Known, Plan, Server, plan
from proto import formation_pb2 as pb


def ep(instance: str = "web.1", host: str = "10.0.0.1", port: int = 5000, release: int = 1,
       generation: int = 0, app: str = "shop", ptype: str = "web") -> pb.Endpoint:
    return pb.Endpoint(app=app, type=ptype, instance=instance, agent="a1", host=host,
                       port=port, release=release, generation=generation)


def wanted(*endpoints: pb.Endpoint) -> dict[str, Server]:
    """The servers of a set whose every endpoint is valid."""
    got, left_out = servers.wanted(endpoints, "shop", "web")
    assert not left_out, left_out
    return got


def active(*names: str) -> dict[str, Known]:
    return {n: Known(Server(n, "10.0.0.1", 5000), Admin.ACTIVE) for n in names}


def removing(*names: str) -> dict[str, Known]:
    return {n: Known(Server(n, "10.0.0.1", 5000), Admin.REMOVING, 1.0) for n in names}


def want(*names: str, host: str = "10.0.0.1") -> dict[str, Server]:
    return {n: Server(n, host, 5000) for n in names}


# ---- hosts: the one field that is free text ---------------------------------------------

@pytest.mark.parametrize("text,canonical", [
    ("10.0.0.1", "10.0.0.1"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
    ("2001:DB8:0:0::1", "2001:db8::1"), ("agent-1.example.com", "agent-1.example.com"),
    ("Agent-1.Example.com.", "agent-1.example.com"), ("localhost", "localhost"),
    ("agent_1", "agent_1"), ("a_b.example", "a_b.example"), ("_x._tcp.Example", "_x._tcp.example"),
])
def test_a_host_is_an_ip_or_a_dns_name(text: str, canonical: str) -> None:
    assert servers.check_host(text) == canonical


@pytest.mark.parametrize("text", [
    "1.2.3.4\nshutdown", "1.2.3.4;shutdown sessions server a/b", "1.2.3.4 check", "",
    "1.2.3.999", "fe80::1%eth0", "0.0.0.0", "::", "224.0.0.1", "a..b", "-a.b", "a-.b",
    "a" * 64 + ".b", ".".join(["abcdefgh"] * 32), "hôte.example", "[::1]", "_" * 64,
    "1.2.3.4:80", "unix@/tmp/x", "\\x41", "a\tb", "host:7071", "agent_1:7071", "a b", "a#b",
    "a/b", "a;b", "agent_1\nshutdown", "a_b.example\n", "a,b", "a@b", "-a_b", "a_b-",
])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        servers.check_host(text)


def test_only_a_listen_address_may_be_unspecified() -> None:
    assert servers.check_host("0.0.0.0", listen=True) == "0.0.0.0"
    assert servers.check_host("::", listen=True) == "::"


@given(st.text(max_size=80))
def test_a_checked_host_is_only_safe_characters(text: str) -> None:
    try:
        host = servers.check_host(text)
    except ValueError:
        return
    assert re.fullmatch(r"[a-z0-9_.:-]{1,253}", host)


# ---- a set: a bad endpoint left out, the rest taken; refused whole only if too large -----

def test_a_set_becomes_servers_named_by_instance_release_generation_and_agent() -> None:
    got = wanted(ep("web.1", release=4, generation=2), ep("web.2", host="::1", port=6000))
    assert got == {"web.1-r4-g2.a1": Server("web.1-r4-g2.a1", "10.0.0.1", 5000),
                   "web.2-r1-g0.a1": Server("web.2-r1-g0.a1", "::1", 6000)}
    assert servers.address("::1", 6000) == "[::1]:6000"


def test_two_copies_of_one_instance_are_two_servers_and_a_duplicate_counts_once() -> None:
    got = wanted(ep("web.1", release=1), ep("web.1", release=2), ep("web.1", release=1,
                                                                     host="10.9.9.9"))
    assert sorted(got) == ["web.1-r1-g0.a1", "web.1-r2-g0.a1"]
    assert got["web.1-r1-g0.a1"].host == "10.0.0.1"  # the first of the two


def test_a_copy_on_two_agents_at_once_is_two_servers() -> None:
    """A drain or a move starts the same copy (instance, release, generation) on another
    agent beside the old one: two servers, so the old one is drained, not replaced in place."""
    old, new = ep("web.1"), ep("web.1", host="10.0.0.2", port=5001)
    new.agent = "a2"
    assert wanted(old, new) == {"web.1-r1-g0.a1": Server("web.1-r1-g0.a1", "10.0.0.1", 5000),
                                "web.1-r1-g0.a2": Server("web.1-r1-g0.a2", "10.0.0.2", 5001)}


@pytest.mark.parametrize("bad", [
    ep(host="1.2.3.4\nshutdown"), ep(host="0.0.0.0"), ep(port=0), ep(port=65536),
    ep(port=-1), ep(instance="web.0"), ep(instance="web;x.1"), ep(instance="Web.1"),
    ep(instance="web.1\n"), ep(instance="worker.1"), ep(app="other"), ep(ptype="worker",
                                                                       instance="worker.1"),
    ep(release=-1), ep(generation=-1), ep(app="Shop"), ep(instance="web.\u0661"),
    pb.Endpoint(app="shop", type="web", instance="web.1", agent="a1\nshutdown",
                host="10.0.0.1", port=5000), pb.Endpoint(app="shop", type="web",
                                                          instance="web.1", agent="A;b",
                                                          host="10.0.0.1", port=5000),
])
def test_a_bad_endpoint_is_left_out_and_the_others_are_taken(bad: pb.Endpoint) -> None:
    """One agent advertising an address formation-lb cannot use (or a lie) must not freeze
    the edge: the set is applied and acknowledged without it."""
    got, left_out = servers.wanted([ep("web.9"), bad, ep("web.8", host="::1")], "shop", "web")
    assert got == {"web.9-r1-g0.a1": Server("web.9-r1-g0.a1", "10.0.0.1", 5000),
                   "web.8-r1-g0.a1": Server("web.8-r1-g0.a1", "::1", 5000)}
    assert len(left_out) == 1 and left_out[0].startswith("endpoint 2: ")
    assert "\n" not in left_out[0] and len(left_out[0]) < 200  # one line, never a huge one


def test_every_bad_endpoint_is_told_and_a_valid_duplicate_after_a_bad_one_counts() -> None:
    got, left_out = servers.wanted(
        [ep("web.1", host="agent_1:7071"), ep("web.2", host="fe80::1%eth0"),
         ep("web.1", host="agent_1"), ep("web.3", port=0)], "shop", "web")
    assert got == {"web.1-r1-g0.a1": Server("web.1-r1-g0.a1", "agent_1", 5000)}
    assert [r.split(":")[0] for r in left_out] == ["endpoint 1", "endpoint 2", "endpoint 4"]
    assert "'agent_1:7071'" in left_out[0] and "'fe80::1%eth0'" in left_out[1]


def test_a_set_of_only_bad_endpoints_wants_nothing() -> None:
    assert servers.wanted([ep(host="a b"), ep(app="other")], "shop", "web")[0] == {}


def test_more_than_the_most_endpoints_is_refused_whole() -> None:
    """10,000 instances, as many again in a rollout's surge, and copies being moved."""
    assert servers.MAX_ENDPOINTS == 30_000
    many = [ep(f"web.{n}") for n in range(1, servers.MAX_ENDPOINTS + 2)]
    with pytest.raises(BadSet, match="more than 30000"):
        servers.wanted(many, "shop", "web")
    assert len(wanted(*many[:-1])) == servers.MAX_ENDPOINTS


def test_the_largest_set_fits_the_message_limit() -> None:
    """MAX_ENDPOINTS endpoints, every field at its longest, fit gRPC's receive limit."""
    name = "a" * 63
    e = pb.Endpoint(app=name, type=name, instance=f"{name}.10000", agent=name, host="h" * 253,
                    port=65535, release=-1, generation=-1)
    one = pb.EndpointSet(version=-1, endpoints=[e]).ByteSize()
    assert one * servers.MAX_ENDPOINTS < follow.MAX_MESSAGE * 0.9
    assert ("grpc.max_receive_message_length", follow.MAX_MESSAGE) in follow.CHANNEL_OPTIONS


def test_an_empty_set_is_valid_and_wants_nothing() -> None:
    assert wanted() == {}


# ---- the diff: table ---------------------------------------------------------------------

def test_new_names_are_added_and_the_unwanted_removed() -> None:
    assert plan(active("a", "b"), want("b", "c")) == Plan(add=(Server("c", "10.0.0.1", 5000),),
                                                          remove=("a",))


def test_a_server_in_maintenance_wanted_again_is_enabled_not_added() -> None:
    assert plan(removing("a"), want("a")) == Plan(enable=("a",))


def test_a_server_removing_and_still_unwanted_is_left_to_the_deleter() -> None:
    assert plan(removing("a"), {}) == Plan()
    assert not plan(removing("a"), {})


def test_a_known_name_at_another_address_is_moved() -> None:
    assert plan(active("a"), want("a", host="10.0.0.2")) == Plan(
        move=(Server("a", "10.0.0.2", 5000),))


def test_nothing_to_do_is_an_empty_plan() -> None:
    assert not plan(active("a", "b"), want("a", "b"))


def test_a_dns_named_server_read_back_at_its_ip_is_not_moved() -> None:
    """`show servers state` gives IPs: a server wanted at a host name whose IP HAProxy has
    needs no change (else every DNS-named server flaps after each read-back)."""
    known = servers.parse_state(STATE, "instances", now=7.0)
    want_ = {"web.1-r1-g0": Server("web.1-r1-g0", "agent_1", 18081),
             "web.2-r1-g0": Server("web.2-r1-g0", "agent-2.example", 18082)}
    ips = {"agent_1": "127.0.0.1", "agent-2.example": "::1"}
    assert servers.resolved(want_, ips) == {"web.1-r1-g0": Server("web.1-r1-g0", "127.0.0.1",
                                                                  18081),
                                            "web.2-r1-g0": Server("web.2-r1-g0", "::1", 18082)}
    assert plan(known, servers.resolved(want_, ips)) == Plan(enable=("web.2-r1-g0",))
    # At another IP it is moved; unresolved it stays a name (the balancer does not add it).
    assert plan(known, servers.resolved(want_, {**ips, "agent_1": "10.0.0.9"})).move == (
        Server("web.1-r1-g0", "10.0.0.9", 18081),)
    assert servers.resolved(want_, {})["web.1-r1-g0"].host == "agent_1"


# ---- the diff: properties ----------------------------------------------------------------

NAMES = st.sampled_from([f"web.{n}-r{r}-g{g}" for n in (1, 2, 3) for r in (1, 2)
                         for g in (0, 1)])
HOSTS = st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"])
SERVERS = st.builds(lambda n, h, p: Server(n, h, p), NAMES, HOSTS, st.sampled_from([5000, 5001]))
KNOWN = st.dictionaries(NAMES, st.builds(Known, SERVERS, st.sampled_from(list(Admin)),
                                         st.floats(0, 100)))
WANTED = st.lists(SERVERS).map(lambda ss: {s.name: s for s in ss})


def carried_out(known: dict[str, Known], p: Plan) -> dict[str, Known]:
    """What HAProxy has once every command of the plan succeeded."""
    after = {n: Known(k.server, k.admin, k.since) for n, k in known.items()}
    for s in p.add + p.move:
        after[s.name] = Known(s, Admin.ACTIVE)
    for n in p.enable:
        after[n].admin = Admin.ACTIVE
    for n in p.remove:
        after[n].admin = Admin.REMOVING
    return after


@given(KNOWN.map(lambda d: {n: Known(Server(n, k.server.host, k.server.port), k.admin,
                                     k.since) for n, k in d.items()}), WANTED)
def test_after_the_plan_exactly_the_wanted_servers_are_active(known: dict[str, Known],
                                                              wanted_: dict[str, Server]
                                                              ) -> None:
    after = carried_out(known, plan(known, wanted_))
    assert {n: k.server for n, k in after.items() if k.admin is Admin.ACTIVE} == wanted_
    assert set(after) == set(known) | set(wanted_)  # nothing vanishes: the deleter deletes


@given(KNOWN.map(lambda d: {n: Known(Server(n, k.server.host, k.server.port), k.admin,
                                     k.since) for n, k in d.items()}), WANTED)
def test_a_plan_carried_out_leaves_nothing_to_do(known: dict[str, Known],
                                                 wanted_: dict[str, Server]) -> None:
    assert not plan(carried_out(known, plan(known, wanted_)), wanted_)


@given(KNOWN.map(lambda d: {n: Known(Server(n, k.server.host, k.server.port), k.admin,
                                     k.since) for n, k in d.items()}), WANTED)
def test_no_name_is_added_twice_nor_both_added_and_removed(known: dict[str, Known],
                                                           wanted_: dict[str, Server]) -> None:
    p = plan(known, wanted_)
    added = [s.name for s in p.add]
    assert not set(added) & set(known)  # a known name is enabled or moved, never re-added
    assert not set(added + list(p.enable) + [s.name for s in p.move]) & set(p.remove)


# ---- commands: only ever the few safe characters -----------------------------------------

HOSTILE = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["1.2.3.4\nshutdown", "a;b", "x y", "web.1\r\n", "\\;"])


@given(st.builds(ep, instance=HOSTILE | NAMES.map(lambda n: n.split("-")[0]),
                 host=HOSTILE | HOSTS, port=st.integers(-5, 70000),
                 release=st.integers(-2, 2**62), generation=st.integers(-2, 2**31 - 1),
                 app=st.sampled_from(["shop", "Shop", "shop\n", ""]),
                 ptype=st.sampled_from(["web", "web x"])))
def test_whatever_the_scheduler_says_a_command_is_one_safe_line(e: pb.Endpoint) -> None:
    got, left_out = servers.wanted([e], "shop", "web")
    assert len(got) + len(left_out) == 1
    if not got:
        return
    (server,) = got.values()
    ip = server.host if servers.is_ip(server.host) else "10.0.0.1"
    commands = (servers.add_commands("instances", server.name, ip, server.port, Checks())
                + servers.move_commands("instances", server.name, ip, server.port)
                + servers.enable_commands("instances", server.name)
                + [servers.remove_command("instances", server.name)]
                + servers.delete_commands("instances", server.name, True))
    for command in commands:
        assert COMMAND.fullmatch(command), command


def test_an_added_server_carries_its_own_check_settings() -> None:
    assert servers.add_commands("instances", "web.1-r1-g0", "::1", 5000, Checks(0.5, 3)) == [
        "add server instances/web.1-r1-g0 [::1]:5000 check inter 500ms fall 3 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s",
        "enable health instances/web.1-r1-g0", "enable server instances/web.1-r1-g0"]


def test_removal_is_maintenance_and_deletion_may_cut_sessions_first() -> None:
    assert servers.remove_command("b", "s") == "set server b/s state maint"
    assert servers.delete_commands("b", "s", False) == ["del server b/s"]
    assert servers.delete_commands("b", "s", True) == ["shutdown sessions server b/s",
                                                       "del server b/s"]


def test_servers_long_in_maintenance_have_their_sessions_cut() -> None:
    known = {**active("a"), "b": Known(Server("b", "10.0.0.1", 1), Admin.REMOVING, 10.0),
             "c": Known(Server("c", "10.0.0.1", 1), Admin.REMOVING, 50.0)}
    assert servers.due_for_delete(known, now=45.0, force_after=30.0) == [("b", True),
                                                                         ("c", False)]


# ---- what HAProxy 2.6 says ---------------------------------------------------------------

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 instances 1 web.1-r1-g0 127.0.0.1 2 0 1 1 26 6 3 2 6 0 0 0 - 18081 - 0 0 - - 0
3 instances 2 web.2-r1-g0 ::1 0 1 1 1 0 1 0 0 2 0 0 0 - 18082 - 0 0 - - 0
4 other 1 x 127.0.0.1 2 0 1 1 26 6 3 2 6 0 0 0 - 9 - 0 0 - - 0
"""


def test_the_servers_state_is_read_back() -> None:
    assert servers.parse_state(STATE, "instances", now=7.0) == {
        "web.1-r1-g0": Known(Server("web.1-r1-g0", "127.0.0.1", 18081), Admin.ACTIVE),
        "web.2-r1-g0": Known(Server("web.2-r1-g0", "::1", 18082), Admin.REMOVING, 7.0)}
    with pytest.raises(ValueError):
        servers.parse_state("[3]: No such backend.\n", "instances", 0.0)


@pytest.mark.parametrize("reply,ok", [
    ("", True), ("[6]: New server registered.\n", True), ("[6]: Server deleted.", True),
    ("[3]: No such server.", False), ("[3]: Already exists a server with the same name in "
                                      "backend.\n", False),
    ("[3]: Server still has connections attached to it, cannot remove it.", False),
    ("[6]: Unknown command, but maybe one of the following ones is a better match:", False),
    ("Unknown command, but maybe one of the following", False),
])
def test_errors_are_told_by_their_severity(reply: str, ok: bool) -> None:
    assert succeeded(reply) is ok


def test_the_configuration_retries_only_what_is_safe() -> None:
    text = config("127.0.0.1", 8080, "/tmp/x/admin.sock", 1000)
    assert "retry-on conn-failure empty-response\n" in text
    assert "http-request disable-l7-retry unless METH_GET || METH_OPTIONS" in text
    assert "option redispatch 1" in text and "balance roundrobin" in text
    assert "\n    daemon" not in text and "bind [::1]:80\n" in config("::1", 80, "/s", 64)


# ---- acknowledgements: held back while a removed server has requests in flight ----------

# `show stat` of HAProxy 2.6.12: web.1 serves two requests, web.2 (in maintenance) one.
STAT = "".join([
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wret",
    "r,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,thr",
    "ottle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration",
    ",hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_ma",
    "x,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_",
    "agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_de",
    "sc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,m",
    "ode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cac",
    "he_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,i",
    "dle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_s",
    "erver_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2",
    "_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detec",
    "ted_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway",
    "_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_tota",
    "l_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1",
    "_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n",
    "listen,FRONTEND,,,3,3,1000,3,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,3,0,3,,,,0,0,0,0,0,",
    "0,,3,3,3,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,3,3,3,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0",
    ",0,0,0,0,0,0,0,0,0,0,0,0,0,0,3,3,3,3,216,0,0,0,\n",
    "instances,web.1-r1-g0,0,0,2,2,,2,0,0,,0,,0,0,0,0,UP 1/2,1,1,0,0,0,1,0,,1,3,1,,2,,2,2,,",
    "2,INI,,,0,0,0,0,0,0,,,,0,0,0,,,,,1,,,0,0,0,0,,,,Initializing,,1,2,1,,,,127.0.0.1:43981",
    ",,http,,,,,,,,0,2,0,,,0,0,0,0,0,0,0,0,0,2,2,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n",
    "instances,web.2-r1-g0,0,0,1,1,,1,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,1,0,0,,1,3,2,,1,,2,1,,1",
    ",,,,0,0,0,0,0,0,,,,0,0,0,,,,,1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:43981,,http,,,,,,,,0,1,0",
    ",,,0,0,0,0,0,0,0,0,0,1,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n",
    "instances,BACKEND,0,0,3,3,100,3,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,1,0,,1,3,0,,3,,1,3,,3,,,,",
    "0,0,0,0,0,0,,,,0,0,0,0,0,0,0,1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,3,0,0,0,",
    ",,0,0,0,0,0,,,,,1,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,3,3,3,3,0,300,0,0,\n",
    "\n",
])


def test_requests_in_flight_are_read_from_show_stat_by_its_header() -> None:
    assert drain.stat_command("instances") == "show stat instances 4 -1"
    assert COMMAND.fullmatch(drain.stat_command("instances"))
    assert drain.parse_stat(STAT, "instances") == {"web.1-r1-g0": 2, "web.2-r1-g0": 1}
    assert drain.parse_stat(STAT, "other") == {}
    # Columns are found by name: another order (or version) reads the same.
    moved = "# svname,scur,pxname,qcur\nweb.1,3,instances,\nweb.2,,instances,4\n"
    assert drain.parse_stat(moved, "instances") == {"web.1": 3, "web.2": 4}
    assert drain.parse_stat(STAT.split("\n", 1)[0] + "\n\n", "instances") == {}


@pytest.mark.parametrize("text", [
    "", "[3]: No such proxy.\n", "# pxname,svname,qcur\ninstances,a,0\n",
    "# pxname,svname,qcur,scur\ninstances,a,0\n", "# pxname,svname,qcur,scur\ninstances,a,x,1\n",
])
def test_anything_but_show_stats_csv_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        drain.parse_stat(text, "instances")


def test_a_set_with_nothing_to_drain_behind_nothing_is_acknowledged_at_once() -> None:
    p = drain.Pending()
    p.add(1, [], 0.0)
    assert p.take() == 1 and not p


def test_a_version_waits_for_its_removals_and_every_earlier_ones() -> None:
    p = drain.Pending()
    p.add(1, ["a", "b"], 0.0)
    p.add(2, [], 0.0)
    p.add(3, ["c"], 0.0)
    assert p.take() is None
    names, mark = p.names()
    assert names == {"a", "b", "c"}
    p.drained({"a", "c"}, mark)   # b still busy: nothing, not even 3 (whose c is idle)
    assert p.take() is None
    p.drained({"b"}, mark)
    assert p.take() == 3 and not p


def test_a_look_taken_before_a_version_came_does_not_clear_it() -> None:
    p = drain.Pending()
    p.add(1, ["a"], 0.0)
    names, mark = p.names()
    p.add(2, ["a"], 0.0)  # a wanted again then removed again while the look was made
    p.drained(names, mark)
    assert p.take() == 1 and p.take() is None and p
    p.drained({"a"}, p.names()[1])
    assert p.take() == 2


def test_after_the_most_a_version_is_acknowledged_anyway() -> None:
    p = drain.Pending()
    p.add(1, ["a"], 10.0)
    p.add(2, ["b"], 20.0)
    assert p.expire(now=309.0, most=300.0) == []
    assert p.expire(now=310.0, most=300.0) == [(1, ["a"])]
    assert p.take() == 1 and p.take() is None


def test_versions_are_never_acknowledged_backwards() -> None:
    p = drain.Pending()
    p.add(5, [], 0.0)
    assert p.take() == 5
    p.add(4, [], 0.0)
    assert p.take() is None and not p


# An applied set (the servers it removed), a look at HAProxy begun, one answered (the removed
# servers it saw idle: sets may be applied meanwhile), or an attempt to acknowledge.
DRAIN_NAMES = st.sampled_from(["a", "b", "c"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 3), st.frozensets(DRAIN_NAMES, max_size=3)),
    st.tuples(st.just("look"), st.just(0), st.just(frozenset[str]())),
    st.tuples(st.just("seen"), st.just(0), st.frozensets(DRAIN_NAMES)),
    st.tuples(st.just("take"), st.just(0), st.just(frozenset[str]()))), max_size=30)


@settings(max_examples=300)
@given(STEPS)
def test_acks_rise_and_never_pass_a_removal_not_seen_idle(
        steps: list[tuple[str, int, frozenset[str]]]) -> None:
    p = drain.Pending()
    version, acks = 0, []
    added: list[tuple[int, frozenset[str]]] = []
    looking: list[tuple[set[str], int, int]] = []  # begun: its names, mark, sets added before
    idle_after: dict[str, int] = {}  # a server -> most sets added before a look saw it idle
    for op, gap, names in steps:
        if op == "add":
            version += gap
            p.add(version, names, 0.0)
            added.append((version, names))
        elif op == "look":
            looking.append((*p.names(), len(added)))
        elif op == "seen" and looking:
            seen, mark, before = looking.pop(0)
            p.drained(names & seen, mark)
            idle_after.update({n: before for n in names & seen})
        elif op == "take" and (acked := p.take()) is not None:
            acks.append(acked)
            # each removal of it and of every earlier version was seen idle by a look begun
            # after it was made
            assert all(idle_after.get(n, -1) > i for i, (v, removed) in enumerate(added)
                       if v <= acked for n in removed)
    assert acks == sorted(set(acks))
    # Once a look begun now sees every server idle, the newest version is acknowledged.
    everything, mark = p.names()
    p.drained(everything, mark)
    if added and (not acks or acks[-1] < added[-1][0]):
        assert p.take() == added[-1][0]
    assert not p


async def test_the_acker_acks_at_once_or_once_drained_and_retries_an_unanswered_look(
) -> None:
    busy: set[str] = {"a"}
    looks: list[set[str]] = []
    sent: list[int] = []
    down = [True]  # the first look finds no runtime API

    async def lookup(names: set[str]) -> set[str]:
        looks.append(names)
        if down.pop() if down else False:
            raise Unavailable("HAProxy's runtime API: gone")
        return names & busy

    acker = drain.Acker(lookup, sent.append)
    task = asyncio.create_task(acker.run())
    try:
        acker.add(1, [])
        assert sent == [1] and not looks  # no look at all: acknowledged within add()
        errors = RUNTIME_ERRORS._value.get()
        acker.add(2, ["a"])
        acker.add(3, [])
        assert sent == [1]
        deadline = time.monotonic() + 5
        while len(looks) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert sent == [1] and RUNTIME_ERRORS._value.get() == errors + 1
        busy.clear()
        while sent == [1] and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert sent == [1, 3] and not acker.pending
    finally:
        task.cancel()


# ---- the balancer against a runtime API that records commands ----------------------------

class FakeRuntime:
    """Says yes to every command; `show servers state` answers `state`."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.state = "1\n"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[FakeRuntime]:
        yield self

    async def run(self, command: str) -> Reply:
        return (await self.run_all([command]))[0]

    async def run_all(self, commands: list[str]) -> list[Reply]:
        self.commands += commands
        return [Reply(c, self.state if c.startswith("show servers state") else "", True)
                for c in commands]


def fake_balancer() -> tuple[Balancer, FakeRuntime]:
    runtime = FakeRuntime()
    return Balancer(runtime, "instances", Checks(), "shop", "web"), runtime  # type: ignore[arg-type]


async def test_a_set_with_a_bad_endpoint_is_applied_without_it_and_told_once(
        caplog: pytest.LogCaptureFixture) -> None:
    b, runtime = fake_balancer()
    bad = [ep("web.2", host="1.2.3.4\nshutdown"), ep("web.3", host="host:7071"),
           pb.Endpoint(app="shop", type="web", instance="web.4", agent="a1\nshutdown",
                       host="10.0.0.4", port=5000)]
    with caplog.at_level(logging.WARNING, logger="lb"):
        taken = await b.apply(pb.EndpointSet(version=3, endpoints=[ep("web.1"), *bad]))
    assert taken == []  # applied: to be acknowledged
    assert all("web.1-" in c for c in runtime.commands) and len(runtime.commands) == 3
    assert not any("\n" in c or "10.0.0.4" in c for c in runtime.commands)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("endpoint set v3: 3 of 4 endpoints left out as invalid")
    assert "first endpoint 2: " in line and "\n" not in line
    assert LEFT_OUT._value.get() == 3
    # The next set without bad endpoints clears the gauge; web.1 leaves it.
    assert await b.apply(pb.EndpointSet(version=4)) == ["web.1-r1-g0.a1"]
    assert LEFT_OUT._value.get() == 0


async def test_a_dns_named_server_is_left_alone_after_a_read_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str) -> str | None:
        return {"agent_1": "127.0.0.1"}.get(host)

    monkeypatch.setattr(balancer, "_resolve", resolve)
    b, runtime = fake_balancer()
    assert await b.apply(pb.EndpointSet(version=1, endpoints=[ep("web.1", host="agent_1",
                                                                  port=18081)])) == []
    assert runtime.commands[0].startswith("add server instances/web.1-r1-g0.a1 "
                                          "127.0.0.1:18081 ")
    runtime.commands.clear()
    # After a runtime error formation-lb reads HAProxy's servers back: at their IPs.
    runtime.state = ("1\n# be_id be_name ...\n3 instances 1 web.1-r1-g0.a1 127.0.0.1 2 0 1 1 "
                     "26 6 3 2 6 0 0 0 - 18081 - 0 0 - - 0\n")
    b.dirty = True
    assert await b.apply(pb.EndpointSet(version=2, endpoints=[ep("web.1", host="agent_1",
                                                                  port=18081)])) == []
    assert runtime.commands == ["show servers state instances"]
