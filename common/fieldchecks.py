"""The error of every app-definition rule and the checks of single values that all parts of
it share (common/appdef.py, common/deploysettings.py, common/appfiles.py): each raises
AppDefError "WHERE: KEY ..." (one line) and returns the value it accepts. Pure: no I/O."""
from __future__ import annotations

import math
from typing import Any


class AppDefError(ValueError):
    """A Procfile or formation.toml that cannot be used; the message names the place."""


def shown(value: object, limit: int = 40) -> str:
    """repr(value), cut to about `limit` characters: a message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_text(where: str, key: str, value: str, max_bytes: int) -> str:
    """Text that can be stored and exec'd: no NUL, valid UTF-8, at most max_bytes."""
    if "\x00" in value:
        raise AppDefError(f"{where}: {key} contains a NUL byte")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise AppDefError(f"{where}: {key} is not valid UTF-8 text") from None
    if size > max_bytes:
        raise AppDefError(f"{where}: {key} is {size} bytes, more than {max_bytes}")
    return value


def check_seconds(where: str, key: str, value: Any, low: float, high: float) -> float:
    """A finite number of seconds from low to high (a TOML int or float; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        raise AppDefError(f"{where}: {key} must be a number of seconds from {low:g} to "
                          f"{high:g}, not {shown(value)}")
    return float(value)
