"""Who leads, by etcd's election recipe, and for how long a leader may believe it still does.

Pure: no I/O, no clock of its own. election.py is the etcd edge that feeds it.

Every replica is a candidate: a key `<prefix>/schedulers/<lease id>` under its own lease,
whose value says its name and address. The leader is the candidate whose key was created
first (the lowest create revision): keys are never re-created with a lower revision, so once
every lower key is gone a candidate stays leader for as long as its own key exists. That
revision is its **epoch**: it orders leaders (a newer leader has a higher one) and fences
their writes (store.Fence).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from common.net import split_hostport

MAX_VALUE = 1024   # bytes of a candidacy's value; a longer one is not a candidate
MAX_NAME = 253     # characters of a replica's name (a host name)
MAX_ADDRESS = 255  # characters of a replica's address (it travels in gRPC metadata)
MIN_TTL, MAX_TTL = 2, 300  # seconds of --leader-ttl: etcd's leases have whole seconds
RENEWALS_PER_TTL = 4       # keepalives per ttl: three may fail before the leader stops
STOP_MARGIN = 0.2          # of the ttl: a leader stops this long before its lease may end


class NotLeader(RuntimeError):
    """This replica does not lead (any more): etcd refused a write made under its fence, or
    its term ended under a call or stream."""


@dataclass(frozen=True)
class Candidate:
    key: bytes
    name: str
    address: str
    joined: float          # unix time it joined the election
    leading_since: float   # unix time it became leader (0: it does not lead, or not yet said)
    revision: int          # its key's create revision: the epoch if it leads


def candidate_value(name: str, address: str, joined: float, leading_since: float = 0.0
                    ) -> bytes:
    return json.dumps({"name": name, "address": address, "joined": joined,
                       "leading_since": leading_since}).encode()


def check_replica_name(name: str) -> str:
    """A replica's name (--name): 1 to 253 printable characters without spaces."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable() \
            or any(c.isspace() for c in name):
        raise ValueError(f"--name must be 1 to {MAX_NAME} printable characters without spaces")
    return name


def check_address(flag: str, address: str) -> str:
    """A replica's address (--advertise): HOST:PORT in at most MAX_ADDRESS printable ASCII
    characters (it travels in gRPC metadata)."""
    if not isinstance(address, str) or len(address) > MAX_ADDRESS or not address.isascii() \
            or not address.isprintable() or " " in address:
        raise ValueError(f"{flag} must be HOST:PORT in at most {MAX_ADDRESS} printable ASCII "
                         "characters")
    split_hostport(address)
    return address


def _time(value: object) -> float:
    """A unix time from JSON: a finite number (not a bool, a string or a huge integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    t = float(value)  # OverflowError for an integer past a float's range
    if not math.isfinite(t):
        raise ValueError("not finite")
    return t


def parse_candidate(key: bytes, value: bytes, revision: int) -> Candidate | None:
    """The candidate a key holds, or None if its value is not one (anyone who may write to
    etcd may write there: such a key is ignored, never trusted, and never raises)."""
    if len(value) > MAX_VALUE or revision <= 0:
        return None
    try:
        d = json.loads(value)
        name, address = d["name"], d["address"]
        joined, since = _time(d.get("joined", 0)), _time(d.get("leading_since", 0))
        check_replica_name(name)
        check_address("address", address)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return None
    return Candidate(key, name, address, joined, since, revision)


def leader_of(candidates: Iterable[Candidate]) -> Candidate | None:
    """The candidate created first leads (etcd's recipe); None if there is none."""
    return min(candidates, key=lambda c: c.revision, default=None)


@dataclass
class Validity:
    """How long a leader may act on its lease, by its own monotonic clock.

    A keepalive sent at `sent` that etcd answered with `ttl` means the lease lives until at
    least sent + ttl (etcd took it after it was sent; a change of etcd's own leader only
    extends leases). The leader stops writing and pushing STOP_MARGIN of the ttl before that,
    so it has stopped before any other replica can be elected."""
    ttl: float
    until: float = 0.0

    def renewed(self, sent: float, granted: float) -> None:
        if granted > 0:
            self.until = max(self.until, sent + granted - STOP_MARGIN * self.ttl)

    def valid(self, now: float) -> bool:
        return now < self.until

    def lost(self) -> None:
        self.until = 0.0

    @property
    def renew_every(self) -> float:
        return self.ttl / RENEWALS_PER_TTL
