"""What the daemons share on their command lines."""
from __future__ import annotations

import argparse
import math
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """Bad usage: one line on stderr (`PROG: error: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(flag: str, text: str, low: float, high: float, integer: bool = False) -> float:
    """A flag's number within [low, high] (finite); ValueError with one line otherwise."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        kind = "a whole number" if integer else "a number of seconds"
        raise ValueError(f"{flag} must be {kind} from {low:g} to {high:g}, not {text!r}")
    return value
