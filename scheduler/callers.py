"""Who makes a change, as the scheduler records it: the audit line of every accepted change
and the author of a release or a scale (with TLS, the caller's certificate; a forwarded call's
caller as the forwarding replica names it: common/tls.caller_identity)."""
from __future__ import annotations

import logging

import grpc

from common.tls import caller_identity
from scheduler.errors import Rejected

log = logging.getLogger("scheduler.control")
MAX_AUTHOR = 255  # characters of a release's author as a plaintext client gives it


def audit(context: grpc.aio.ServicerContext, what: str) -> None:
    """One line per accepted change, naming who made it (with TLS: the certificate's role and
    name), like an audit log: `operator alice: scaled shop web=3`."""
    who = caller_identity(context)
    log.info("%s: %s", who if who is not None else f"plaintext caller {context.peer()}", what)


def author_of(context: grpc.aio.ServicerContext, said: str) -> str:
    """Who makes a release: the caller's certificate when there is one (what a client says of
    itself is then ignored), else what ctl says (`user@host`), checked."""
    who = caller_identity(context)
    if who is not None:
        return str(who)
    if len(said) > MAX_AUTHOR or not said.isprintable():
        raise Rejected(f"author must be at most {MAX_AUTHOR} printable characters")
    return said
