"""Addresses and ports."""
from __future__ import annotations

import socket


def split_hostport(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """`HOST:PORT` or `:PORT` -> (host, port); raise ValueError on anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or default_host), int(port)


def is_free(port: int) -> bool:
    """Can a TCP socket bind this port on every address right now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
