"""Names of apps, process types and agents, and instance ids: validated at every entry point.

A name is `[a-z0-9][a-z0-9-]{0,62}` so that no etcd key built from it can escape its prefix.
"""
from __future__ import annotations

import re

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# The Procfile's `release:` entry is the release phase (docs/releases.md), never a process
# type; its run of release vN is the instance `release.N`.
RELEASE_TYPE = "release"
# The largest count `ctl scale` accepts for one process type (documented in docs/ctl.md).
MAX_INSTANCES_PER_TYPE = 10_000


class InvalidName(ValueError):
    """A name that is not `[a-z0-9][a-z0-9-]{0,62}`."""


def check_name(kind: str, name: str) -> str:
    """Return name if it is valid, else raise InvalidName with a one-line reason."""
    if not NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 70 else repr(name[:64]) + "…"  # never echo a huge one
        raise InvalidName(f"invalid {kind} name {shown}: use lowercase letters, digits and '-' "
                          f"(at most 63, starting with a letter or digit)")
    return name


def instance_id(ptype: str, n: int) -> str:
    """`web`, 3 -> `web.3`."""
    return f"{ptype}.{n}"


def split_instance_id(iid: str) -> tuple[str, int]:
    """`web.3` -> (`web`, 3); raise ValueError on anything else."""
    ptype, sep, num = iid.rpartition(".")
    if not sep or not num.isdigit() or not NAME_RE.fullmatch(ptype) or int(num) < 1:
        shown = repr(iid) if len(iid) <= 70 else repr(iid[:64]) + "…"  # never echo a huge one
        raise ValueError(f"invalid instance id {shown}")
    return ptype, int(num)


def parse_count(ptype: str, text: str) -> int:
    """Parse the N of `TYPE=N`: a decimal integer from 0 to MAX_INSTANCES_PER_TYPE."""
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"count for {ptype!r} must be a whole number from 0 to "
                         f"{MAX_INSTANCES_PER_TYPE}, not {text!r}")
    return check_count(ptype, int(text))


def check_count(ptype: str, n: int) -> int:
    if not 0 <= n <= MAX_INSTANCES_PER_TYPE:
        raise ValueError(f"count for {ptype!r} must be from 0 to {MAX_INSTANCES_PER_TYPE}, not {n}")
    return n
