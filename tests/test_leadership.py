"""Who leads and for how long it may believe so (scheduler/leadership.py), as pure logic: no
I/O, no clock. A candidacy's value is written by anyone who may write to etcd, so whatever it
holds is either a candidate or None, never an exception."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.leadership import (
    MAX_NAME,
    MAX_TTL,
    MAX_VALUE,
    MIN_TTL,
    RENEWALS_PER_TTL,
    STOP_MARGIN,
    Candidate,
    Validity,
    candidate_value,
    check_replica_name,
    leader_of,
    parse_candidate,
)

KEY = b"/formation/schedulers/694d7a1b2c3d4e5f"
GOOD = {"name": "s1", "address": "10.0.0.1:7000", "joined": 1700000000.5, "leading_since": 0.0}


def value(**changes: object) -> bytes:
    """GOOD with fields changed; a field changed to ... is left out."""
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def candidate(revision: int, name: str = "s") -> Candidate:
    return Candidate(f"k{revision}".encode(), name, "h:1", 0.0, 0.0, revision)


# ---- parse_candidate ---------------------------------------------------------------------

def test_what_candidate_value_writes_parses_back():
    written = candidate_value("s1.example.com", "[::1]:7000", 1700000000.25, 1700000001.5)
    assert parse_candidate(KEY, written, 42) == Candidate(
        KEY, "s1.example.com", "[::1]:7000", 1700000000.25, 1700000001.5, 42)
    # leading_since defaults to 0: a candidate that does not (yet) say it leads
    assert parse_candidate(KEY, candidate_value("s", ":7000", 1.0), 1) == Candidate(
        KEY, "s", ":7000", 1.0, 0.0, 1)


def test_the_times_may_be_left_out():
    assert parse_candidate(KEY, value(joined=..., leading_since=...), 3) == Candidate(
        KEY, "s1", "10.0.0.1:7000", 0.0, 0.0, 3)


@given(name=st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1,
                    max_size=MAX_NAME),
       host=st.from_regex(r"[a-z0-9.-]{0,40}", fullmatch=True),
       port=st.integers(0, 65535),
       joined=st.floats(allow_nan=False, allow_infinity=False),
       since=st.floats(allow_nan=False, allow_infinity=False),
       revision=st.integers(1, 2**63 - 1))
def test_every_value_candidate_value_writes_parses_back(name, host, port, joined, since,
                                                         revision):
    written = candidate_value(name, f"{host}:{port}", joined, since)
    if len(written) <= MAX_VALUE:
        assert parse_candidate(KEY, written, revision) == Candidate(
            KEY, name, f"{host}:{port}", joined, since, revision)


@pytest.mark.parametrize("hostile", [
    b"", b"not json", b"\xff\xfe\x00garbage", b"{", b"null", b"42", b'"s1"', b"true",
    b'["s1", "10.0.0.1:7000"]',                      # a list, not an object
    json.dumps([GOOD]).encode(),
    value(name=...), value(address=...), b"{}",       # missing fields
    value(name=7), value(name=None), value(name=["s1"]), value(name={"n": 1}),
    value(address=7000), value(address=None), value(address=["h", 1]),
    value(joined={"t": 1}), value(joined=[1]), value(joined=None), value(joined="soon"),
    value(leading_since=[]), value(leading_since="x"),
    value(joined=float("nan")), value(joined=float("inf")), value(joined=float("-inf")),
    value(leading_since=float("nan")), value(leading_since=float("inf")),
    b'{"name": "s1", "address": "h:1", "joined": NaN}',
    b'{"name": "s1", "address": "h:1", "joined": 1e400}',  # inf once parsed
    value(name=""), value(name="s 1"), value(name="s\x001"), value(name="s\t1"),
    value(name="s\n"), value(name="\u2028"), value(name="x" * (MAX_NAME + 1)),
    value(address=""), value(address="10.0.0.1"), value(address="h:"), value(address="h:port"),
    value(address="h:65536"), value(address="h:-1"), value(address="h:1.5"),
    value(address="h:²"),
])
def test_a_hostile_value_is_not_a_candidate(hostile):
    assert parse_candidate(KEY, hostile, 5) is None


def test_a_value_longer_than_max_value_is_not_read():
    padded = value(name="s1", pad="x" * MAX_VALUE)
    assert len(padded) > MAX_VALUE and parse_candidate(KEY, padded, 5) is None
    exact = value(pad="x" * (MAX_VALUE - len(value(pad=""))))
    assert len(exact) == MAX_VALUE and parse_candidate(KEY, exact, 5) is not None
    assert parse_candidate(KEY, b" " * 10_000_000, 5) is None  # not even parsed


@pytest.mark.parametrize("revision", [0, -1, -(2**63)])
def test_a_key_without_a_positive_create_revision_is_not_a_candidate(revision):
    assert parse_candidate(KEY, value(), revision) is None


@pytest.mark.parametrize("hostile", [
    value(joined=10**400), value(leading_since=-(10**400)), b"[" * MAX_VALUE,
    b'{"name": ' + b"[" * (MAX_VALUE - 9),
    b'{"name": "s", "address": "h:1", "joined": "12"}',
    b'{"name": "s", "address": "h:1", "leading_since": true}',
    b'{"name": "s", "address": "h 1:1"}', b'{"name": "s", "address": "h\\u0000:1"}',
    b'{"name": "s", "address": "h\\u00e9:1"}',
    b'{"name": "s", "address": "' + b"h" * 300 + b':1"}',
], ids=["huge-joined", "huge-since", "deep-list", "deep-name", "string-time", "bool-time",
        "address-space", "address-nul", "address-non-ascii", "address-long"])
def test_a_value_that_breaks_json_or_float_is_not_a_candidate(hostile):
    assert len(hostile) <= MAX_VALUE
    assert parse_candidate(KEY, hostile, 5) is None


def test_check_replica_name():
    assert check_replica_name("s1") == "s1"
    assert check_replica_name("x" * MAX_NAME) == "x" * MAX_NAME
    for bad in ("", " ", "a b", "a\x00", "a\x7f", "x" * (MAX_NAME + 1), "a\u00a0b"):
        with pytest.raises(ValueError):
            check_replica_name(bad)


# ---- leader_of ---------------------------------------------------------------------------

def test_the_candidate_created_first_leads():
    a, b, c = candidate(7, "a"), candidate(3, "b"), candidate(12, "c")
    assert leader_of([a, b, c]) == b
    assert leader_of(iter([c, a])) == a   # any iterable, read once
    assert leader_of([a]) == a
    assert leader_of([]) is None
    assert leader_of(iter(())) is None


@given(st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=30, unique=True),
       st.randoms(use_true_random=False))
def test_leader_of_is_the_lowest_revision_in_any_order(revisions, rnd: random.Random):
    candidates = [candidate(r) for r in revisions]
    rnd.shuffle(candidates)
    leader = leader_of(candidates)
    assert leader is not None and leader.revision == min(revisions)
    assert leader_of(reversed(candidates)) == leader


# ---- Validity ----------------------------------------------------------------------------

def test_a_new_validity_is_not_valid():
    v = Validity(10.0)
    assert v.until == 0.0 and not v.valid(0.0) and not v.valid(1e9)


def test_a_renewal_is_valid_until_the_margin_before_the_lease_can_end():
    v = Validity(10.0)
    v.renewed(100.0, 10.0)
    assert v.until == pytest.approx(110.0 - STOP_MARGIN * 10.0) == pytest.approx(108.0)
    assert v.valid(100.0) and v.valid(107.999)
    assert not v.valid(v.until) and not v.valid(108.5) and not v.valid(110.0)


def test_a_renewal_only_extends():
    v = Validity(10.0)
    v.renewed(100.0, 10.0)
    v.renewed(99.0, 10.0)      # an older keepalive's answer, arriving late
    assert v.until == pytest.approx(108.0)
    v.renewed(101.0, 5.0)      # granted less than before: still never shortens
    assert v.until == pytest.approx(108.0)
    v.renewed(103.0, 10.0)
    assert v.until == pytest.approx(111.0)


@pytest.mark.parametrize("granted", [0.0, -1.0, -1e9])
def test_a_lease_granted_no_time_does_not_extend(granted):
    v = Validity(10.0)
    v.renewed(1000.0, granted)
    assert v.until == 0.0 and not v.valid(999.0)
    v.renewed(100.0, 10.0)
    v.renewed(200.0, granted)
    assert v.until == pytest.approx(108.0)


def test_lost_ends_it_at_once():
    v = Validity(10.0)
    v.renewed(100.0, 10.0)
    v.lost()
    assert v.until == 0.0 and not v.valid(100.0) and not v.valid(0.0)


@pytest.mark.parametrize("ttl", [MIN_TTL, 10, MAX_TTL, 2.5])
def test_renewed_every_quarter_ttl(ttl):
    assert RENEWALS_PER_TTL == 4
    assert Validity(float(ttl)).renew_every == pytest.approx(ttl / 4)


renewals = st.lists(st.tuples(st.floats(0, 1000, allow_nan=False),
                              st.floats(-50, 2 * MAX_TTL, allow_nan=False)), max_size=40)


@given(ttl=st.floats(MIN_TTL, MAX_TTL), start=st.floats(0, 1e6), steps=renewals)
def test_the_leader_always_stops_before_its_lease_can_end(ttl, start, steps):
    """Whatever the renewals (sent in order, any grant), `until` never goes back and never
    reaches the margin before the latest any granted lease may last."""
    v = Validity(ttl)
    sent, ends = start, []
    for gap, granted in steps:
        sent += gap
        before = v.until
        v.renewed(sent, granted)
        if granted > 0:
            ends.append(sent + granted)
        assert v.until >= before
        if not ends:
            assert v.until == 0.0
            continue
        stop = max(ends) - STOP_MARGIN * ttl
        # 0.0 is where it starts: valid at no time of a monotonic clock (never negative)
        assert v.until == max(0.0, stop)
        assert not v.valid(max(0.0, stop)) and not v.valid(max(ends))
