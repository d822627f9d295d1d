"""Waiting for the cluster to get somewhere (`--wait`), with a progress line on a terminal."""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

from ctl.errors import USAGE, CtlError


def check_timeout(timeout: float) -> float:
    """--timeout: finite and positive (NaN would wait forever), else a usage error."""
    if not math.isfinite(timeout) or timeout <= 0:
        raise CtlError(f"--timeout must be a positive number of seconds, not {timeout:g}", USAGE)
    return timeout


def watch(progress: Callable[[], tuple[bool, str]], timeout: float, show: bool
          ) -> tuple[bool, str]:
    """Poll progress() until it says done or timeout seconds pass; (done?, its last line).
    With show, the line is redrawn on stderr as it changes."""
    deadline = time.monotonic() + timeout
    while True:
        done, line = progress()
        if show:
            sys.stderr.write(f"\r\033[K{line}")
            sys.stderr.flush()
        if done or time.monotonic() >= deadline:
            break
        time.sleep(0.1)  # polling a remote API between renders, not synchronizing threads
    if show:
        sys.stderr.write("\n")
    return done, line
