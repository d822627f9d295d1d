"""Hypothesis strategies for tests/test_fuzz.py: every request message of the Control,
AgentLink and AgentApi services of proto/formation.proto with well-typed but hostile field
values, and raw bytes that are no message at all.

Names a request may act on are drawn from a small namespace of its own (apps `fz-a`..`fz-c`,
agents `fz-agent-1`..`fz-agent-3`): the fuzzer's state stays bounded however long it runs,
and it never touches the cluster's real agent. Hostile values are every other kind of string.
"""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from common.limits import MAX_TYPES_PER_RELEASE
from common.names import NAME_RE
from proto import formation_pb2 as pb

FZ_APPS = ["fz-a", "fz-b", "fz-c"]
FZ_TYPES = ["web", "worker", "fz-t"]
FZ_AGENTS = ["fz-agent-1", "fz-agent-2", "fz-agent-3"]

INT32 = (-2**31, 2**31 - 1)
INT64 = (-2**63, 2**63 - 1)
Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (valid values, hostile ones)


def kinds(cls: Any, **fields: Field) -> Field:
    """(messages of cls with every field valid, edge values included; messages with each field
    valid three times in four, so often all valid but one)."""
    sane = st.builds(cls, **{k: valid for k, (valid, _) in fields.items()})
    wild = st.builds(cls, **{k: st.one_of(valid, valid, valid, hostile)
                             for k, (valid, hostile) in fields.items()})
    return sane, wild


def message(cls: Any, **fields: Field) -> st.SearchStrategy[Any]:
    """Messages of cls: half all valid, half hostile (see kinds)."""
    return st.one_of(*kinds(cls, **fields))


# Strings that are no valid name (or a valid one that is nobody's), each a kind of trouble;
# the big ones are made when drawn, so no strategy's repr shows them.
HOSTILE_STRINGS = [
    "", " ", "A", "fz_a", "fz a", "-fz", "fz-a.", "fz-a\x00", "\x00", "fz-a\n", "fż", "ﬀ",
    "٣", "\u202efz", "../../etc", "fz/a", "fz-a/web/1/web.1", "a" * 64,
    "\U0001f4a9" * 100,
]
BIG_STRINGS = [("é", 1000), ("é", 40_000), ("x", 100_000), ("x", 300_000),
               ("o", 4 * 2**20 + 16)]  # over gRPC's 4 MiB limit: RESOURCE_EXHAUSTED, never read
hostile_text = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40),
                         st.sampled_from(BIG_STRINGS).map(lambda big: big[0] * big[1]))


def named(valid: list[str]) -> Field:
    """One of `valid`, or no valid name at all (so nothing outside the namespace is made)."""
    return st.sampled_from(valid), hostile_text.filter(lambda s: not NAME_RE.fullmatch(s))


def int_range(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Integers from lo to hi, their ends and 0, 1, -1 often."""
    edges = sorted({x for x in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= x <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


int32 = int_range(*INT32)
int64 = int_range(*INT64)
BAD_FLOATS = [-0.0, 0.099, 3600.0001, -1.0, 1e308, 5e-324, float("nan"), float("inf"),
              float("-inf")]
bad_floats = st.one_of(st.sampled_from(BAD_FLOATS), st.floats(allow_nan=True,
                                                              allow_infinity=True))


def seconds(lo: float, hi: float) -> Field:
    return st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi)), bad_floats


apps = named(FZ_APPS)
types = named(FZ_TYPES)
agents = named(FZ_AGENTS)
# Instance states as numbers: every known one and unknown ones (proto3 enums are open).
states = st.one_of(st.sampled_from(range(-1, 10)), int32)
commands: Field = (st.sampled_from(["sleep 1000", "sleep 1000 # é", "$(reboot)", " sleep 1"]),
                   st.one_of(st.sampled_from(["", "   ", "sleep 1000\x00"]),
                             st.text(max_size=40), st.just("c").map(lambda c: c * 8193)))
health_checks = kinds(
    pb.HealthCheck,
    type=(st.sampled_from(["", "tcp", "http"]), st.sampled_from(["exec", "bogus", "TCP", "h\0"])),
    path=(st.sampled_from(["/", "/healthz", "/" + "p" * 1023]),
          st.one_of(st.sampled_from(["", "/a b", "/\r\nX: y", "healthz", "/" + "p" * 1024]),
                    hostile_text)),
    command=(st.just(""), commands[0]),
    interval=(st.none() | seconds(0.1, 3600)[0], bad_floats),
    timeout=(st.none() | seconds(0.1, 3600)[0], bad_floats),
    grace=(st.none() | seconds(0, 3600)[0], bad_floats),
    failures=(st.none() | st.integers(1, 1000), int32))
percents: Field = (st.sampled_from(["0%", "25%", "100%"]),
                   st.one_of(st.sampled_from(["", "25", "101%", "-1%", "%", "05%", "1e3%"]),
                             hostile_text))
deploy_settings = kinds(  # one member of each oneof: a percent surge, a count unavailable
    pb.DeploySettings,
    max_surge_percent=(st.none() | percents[0], percents[1]),
    max_unavailable_count=(st.none() | st.integers(0, 10_000), int32),
    min_healthy_time=(st.none() | seconds(0, 3600)[0], bad_floats),
    healthy_deadline=(st.none() | seconds(0.001, 3600)[0], bad_floats),
    auto_revert=(st.none() | st.booleans(), st.booleans()))
process_types = kinds(
    pb.ProcessType, name=types, command=commands, stop_timeout=seconds(0, 3600),
    at_most_once=(st.booleans(), st.booleans()),
    health=(st.none() | health_checks[0], health_checks[1]),
    deploy=(st.none() | deploy_settings[0], deploy_settings[1]))
env_keys = st.one_of(st.sampled_from(["PATH", "A", "_", "K" * 255]),
                     st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True))
env_values = st.one_of(st.sampled_from(["", "é", "a=b", "\t"]), st.text(max_size=20).filter(
    lambda v: "\x00" not in v))
bad_env_keys = st.one_of(st.sampled_from(["", "1A", "A-B", "A\x00", "É", "K" * 256]),
                         st.text(max_size=10))
bad_env_values = st.one_of(st.sampled_from(["\x00", "a\x00b"]),
                           st.just("v").map(lambda v: v * 300_000))
TOO_MANY_TYPES = [pb.ProcessType(name=f"t{i}", command="sleep 1000")
                  for i in range(MAX_TYPES_PER_RELEASE + 1)]
TOO_MANY_VARS = {f"V{i}": "" for i in range(1001)}

# What a plaintext ctl says of itself (the fuzzed cluster is plaintext).
authors: Field = (st.sampled_from(["", "me@host"]),
                  st.one_of(hostile_text.filter(lambda s: len(s) > 255 or not s.isprintable()),
                            st.just("x" * 256)))
deploys = message(
    pb.DeployRequest, app=apps,
    types=(st.lists(process_types[0], min_size=1, max_size=4, unique_by=lambda t: t.name),
           st.one_of(st.just([]), st.lists(process_types[1], min_size=1, max_size=4),
                     st.builds(lambda: TOO_MANY_TYPES))),
    env=(st.dictionaries(env_keys, env_values, max_size=4),
         st.one_of(st.dictionaries(bad_env_keys, env_values, min_size=1, max_size=2),
                   st.dictionaries(env_keys, bad_env_values, min_size=1, max_size=2),
                   st.builds(lambda: TOO_MANY_VARS))),
    author=authors)
counts: Field = (st.sampled_from([0, 1, 2, 3, 10_000]),
                 st.one_of(st.sampled_from([10_001, -1, *INT32]), int32))
scales = message(pb.ScaleRequest, app=apps,
                 counts=(st.dictionaries(types[0], counts[0], min_size=1, max_size=3),
                         st.dictionaries(st.one_of(*types), st.one_of(*counts), max_size=3)),
                 author=authors, undo=(st.just(False), st.booleans()))
list_scales = message(pb.ListScalesRequest, app=apps)
formations = message(pb.GetFormationRequest, app=apps)
list_releases = message(pb.ListReleasesRequest, app=apps)
get_configs = message(pb.GetConfigRequest, app=apps)
set_configs = message(
    pb.SetConfigRequest, app=apps,
    set=(st.dictionaries(env_keys, env_values, min_size=1, max_size=3),
         st.one_of(st.dictionaries(bad_env_keys, env_values, min_size=1, max_size=2),
                   st.dictionaries(env_keys, bad_env_values, min_size=1, max_size=2),
                   st.builds(lambda: TOO_MANY_VARS))),
    unset=(st.lists(env_keys, max_size=3), st.lists(bad_env_keys, min_size=1, max_size=3)),
    author=authors)
rollbacks = message(pb.RollbackRequest, app=apps,
                    version=(st.sampled_from([0, 1, 2, 3]),
                             st.one_of(st.sampled_from([-1, 2**62, -(2**63)]), int32)),
                    author=authors)
restarts = message(pb.RestartRequest, app=apps,
                   targets=(st.lists(st.sampled_from(["web", "worker", "web.1", "web.2",
                                                      "worker.1"]), max_size=3),
                            st.one_of(st.lists(st.text(max_size=80), min_size=1, max_size=3),
                                      st.builds(lambda: ["web"] * 101),
                                      st.lists(st.sampled_from(["web.0", "web.x", ".1", "nope",
                                                                "web.99"]), min_size=1))),
                   author=authors)
page_tokens: Field = (
    st.one_of(
        st.sampled_from(["", "fz-a/web/1/web.1", "fz-a/web/0/", "a/b/0/d", "fz-a/web/-1/x"]),
        # well-formed tokens of rows that do not exist, each another one
        st.builds(lambda n, size: f"zz/web/{n}/web.{n}" + "x" * size, st.integers(0, 2**64),
                  st.sampled_from([0, 10, 1000]))),
    st.one_of(st.sampled_from(["////", "/", "fz-a", "a/b/c/d", "fz-a/web/1e3/x"]),
              st.just("9").map(lambda n: "a/b/" + n * 5000 + "/x"), hostile_text))
list_instances = message(
    pb.ListInstancesRequest, app=(st.just("") | apps[0], apps[1]),
    type=(st.just("") | types[0], types[1]), state=(st.integers(0, 8), states),
    page_size=(st.one_of(st.integers(0, 10), st.sampled_from([5000, 5001, INT32[1]])),
               st.integers(INT32[0], -1)),
    page_token=page_tokens)
list_agents = st.just(pb.ListAgentsRequest())
drains = message(pb.DrainRequest, agent=agents, undo=(st.booleans(), st.booleans()))
removes = message(pb.RemoveAgentRequest, agent=agents)
selectors: Field = (
    st.sampled_from(["", "web", "worker", "web.1", "web.٣", "web.𝟙", "web.99999999999999999999"]),
    st.one_of(st.sampled_from(["web.0", "web.-1", ".1", "web.", "web.1.2", "web.²", "web.①",
                               "web.+1", "Web"]), hostile_text))
logs = message(pb.LogsRequest, app=(st.just("") | apps[0], apps[1]), selector=selectors,
               tail=(st.sampled_from([0, 1, 100, 100_000]), st.sampled_from([-1, 100_001, *INT32])),
               follow=(st.just(False), st.just(False)))
# Never follow: a followed feed never ends (a follow is tested in tests/test_events.py).
events = message(pb.EventsRequest, app=apps,
                 tail=(st.sampled_from([0, 1, 999, 1000]),
                       st.one_of(st.sampled_from([-1, 1001, *INT32]), int32)),
                 follow=(st.just(False), st.just(False)))

# Control's methods: the request strategy and the status codes a call may be answered with
# besides OK. RESOURCE_EXHAUSTED is gRPC's for a request over 4 MiB (hostile_text); ABORTED is a
# Deploy that lost a race to another deploy of the app; NOT_FOUND an agent nobody knows;
# FAILED_PRECONDITION a scale before any deploy, a removal of an agent that is not down.
# UNAVAILABLE (etcd down) and DEADLINE_EXCEEDED never: etcd is up, and the scheduler bounds
# the reads of every agent's logs (10 s), so a Logs call without follow ends.
CONTROL: dict[str, tuple[st.SearchStrategy[Any], set[str]]] = {
    "Deploy": (deploys, {"INVALID_ARGUMENT", "ABORTED"}),
    "Scale": (scales, {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}),
    "GetFormation": (formations, {"INVALID_ARGUMENT"}),
    "ListInstances": (list_instances, {"INVALID_ARGUMENT"}),
    "ListAgents": (list_agents, set()),
    "ListReleases": (list_releases, {"INVALID_ARGUMENT"}),
    "ListScales": (list_scales, {"INVALID_ARGUMENT"}),
    "GetConfig": (get_configs, {"INVALID_ARGUMENT"}),
    "SetConfig": (set_configs, {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "ABORTED"}),
    "Rollback": (rollbacks, {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND",
                             "ABORTED"}),
    "Restart": (restarts, {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND"}),
    "Drain": (drains, {"INVALID_ARGUMENT", "NOT_FOUND"}),
    "RemoveAgent": (removes, {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"}),
    "Logs": (logs, {"INVALID_ARGUMENT"}),
    "Events": (events, {"INVALID_ARGUMENT"}),
}
REQUEST_TYPES = {"Deploy": pb.DeployRequest, "Scale": pb.ScaleRequest,
                 "GetFormation": pb.GetFormationRequest,
                 "ListInstances": pb.ListInstancesRequest,
                 "ListAgents": pb.ListAgentsRequest, "ListReleases": pb.ListReleasesRequest,
                 "ListScales": pb.ListScalesRequest, "GetConfig": pb.GetConfigRequest, "SetConfig": pb.SetConfigRequest,
                 "Rollback": pb.RollbackRequest, "Restart": pb.RestartRequest,
                 "Drain": pb.DrainRequest,
                 "RemoveAgent": pb.RemoveAgentRequest, "Logs": pb.LogsRequest,
                 "Events": pb.EventsRequest}

# ---- raw bytes ------------------------------------------------------------------------------

GARBAGE = [
    b"\xff\xff\xff\xff",              # field 0x1fffffff.. with wire type 7
    b"\x0a",                          # field 1, length-delimited, no length
    b"\x0a\x05ab",                    # a length past the end
    b"\x0a\x02\xff\xfe",              # a string field that is not UTF-8
    b"\x08",                          # a varint with nothing after it
    b"\x08" + b"\xff" * 11,           # a varint of 11 bytes
    b"\x0a\xff\xff\xff\xff\x0f",      # a length of 4 GiB
    b"\x00",                          # field number 0
    b"\x0b\x0c",                      # a group (wire type 3) in proto3
    b"\x0c",                          # an end-group with no start
    b"\x12\x03\x0a\x01\xff",          # a nested message with invalid UTF-8 inside
    b"\x12" + b"\x80" * 9 + b"\x01",  # an overlong length
    bytes(range(256)),
]
raw_bytes = st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=64),
                      st.builds(lambda a, b: a + b, st.sampled_from(GARBAGE), st.binary(max_size=16)))

# ---- AgentLink ------------------------------------------------------------------------------

# Where the scheduler dials a fake agent for logs: nothing there, or no address at all.
addresses: Field = (
    st.sampled_from(["", "127.0.0.1:1", "[::1]:1", "unix:/nonexistent", "unix-abstract:fz",
                     "ipv4:1.2.3", "xds:///fz", ":::", "é:1", "127.0.0.1:99999", "a" * 255]),
    st.one_of(st.sampled_from(["a" * 256, "a\x00b", "a\nb"]), hostile_text))
ids: Field = (
    st.sampled_from(["web.1", "web.2", "worker.1", "fz-t.1", "web.٣", "web.𝟙", "web.01"]),
    st.one_of(st.sampled_from(["web.0", "web.-1", "web", ".1", "web.1.1", "", "Web.1", "web.²",
                               "web.①", "web. 1", "web.1 ", "web.+1"]), hostile_text))
statuses = kinds(
    pb.InstanceStatus, app=apps, id=ids, release=(st.integers(0, 3), int64),
    pid=(st.integers(0, 2**22), int32), port=(st.integers(0, 65535), int32),
    restarts=(st.integers(0, 3), int32),
    reason=(st.sampled_from(["", "exit 1", "r" * 1024]), st.one_of(st.just("r" * 1025),
                                                                  hostile_text)),
    state=(st.integers(1, 7), states))
TOO_MANY_STATUSES = [pb.InstanceStatus(app="fz-a", id=f"web.{n}", release=1,
                                       state=pb.INSTANCE_RUNNING)
                     for n in range(1, 10_002)]
hellos = message(
    pb.Hello, name=agents, address=addresses, metrics_address=addresses, api_address=addresses,
    capacity=(st.integers(0, 3), st.sampled_from([-1, 100_001, *INT32])),
    instances=(st.lists(statuses[0], max_size=3),
               st.one_of(st.lists(statuses[1], min_size=1, max_size=3),
                         st.builds(lambda: TOO_MANY_STATUSES))),
    isolation=(st.sampled_from(["cgroup", "process-group", ""]), addresses[1]))


def frame(m: pb.AgentMessage) -> bytes:
    return m.SerializeToString()


hello_frames = hellos.map(lambda h: frame(pb.AgentMessage(hello=h)))
heartbeat_frame = frame(pb.AgentMessage(heartbeat=pb.Heartbeat()))
message_frames = st.one_of(
    st.just(heartbeat_frame),
    st.lists(st.one_of(*statuses), max_size=5).map(
        lambda items: frame(pb.AgentMessage(statuses=pb.StatusBatch(items=items)))),
    st.just(frame(pb.AgentMessage())),  # no kind set
    hello_frames)                        # a second hello
# A session: a hello first, then messages; or with no hello first, or a frame that is no
# message anywhere (test_fuzz.py: test_garbage_after_hello_always_ends_the_stream).
FUZZ_GARBAGE_AFTER_HELLO = True
good_sessions = st.tuples(hello_frames, st.lists(message_frames, max_size=5)).map(
    lambda s: [s[0], *s[1]])
garbage_first = st.tuples(raw_bytes, st.lists(st.one_of(message_frames, raw_bytes), max_size=3)
                          ).map(lambda s: [s[0], *s[1]])
no_hello_first = st.tuples(message_frames.filter(lambda f: not f.startswith(b"\x0a")),
                           st.lists(message_frames, max_size=3)).map(lambda s: [s[0], *s[1]])
garbage_after_hello = st.tuples(
    hello_frames, st.lists(message_frames, max_size=3), raw_bytes,
    st.lists(message_frames, max_size=2)).map(lambda s: [s[0], *s[1], s[2], *s[3]])
sessions = st.one_of(good_sessions, garbage_first, no_hello_first,
                     *([garbage_after_hello] if FUZZ_GARBAGE_AFTER_HELLO else []))
# A Control Logs call made while a session is open (its agent is then dialled for logs).
midway_logs = st.none() | st.builds(pb.LogsRequest, app=st.just("") | apps[0],
                                    selector=st.sampled_from(["", "web", "web.1"]),
                                    tail=st.sampled_from([0, 10]))
