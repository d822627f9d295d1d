"""Logging of the daemons: one line per record on stdout, prefixed with the daemon's name."""
from __future__ import annotations

import logging
import sys


def setup_logging(name: str) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format=f"%(asctime)s {name} | %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aetcd").setLevel(logging.WARNING)
