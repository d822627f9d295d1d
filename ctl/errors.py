"""ctl's one error type: a one-line message and the exit code it means (README, docs/ctl.md)."""
from __future__ import annotations

USAGE = 2    # bad usage or rejected input
RUNTIME = 1  # scheduler unreachable, timeout


class CtlError(Exception):
    def __init__(self, message: str, code: int = RUNTIME) -> None:
        super().__init__(message)
        self.code = code
