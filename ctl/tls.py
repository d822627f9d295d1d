"""`ctl tls init|issue`: the cluster's CA and its parts' certificates, as files. Needs no
scheduler.

`ctl tls init [--dir DIR]` makes a CA: DIR/ca.pem and DIR/ca-key.pem (DIR is made 0700).
`ctl tls issue ROLE NAME [--dir DIR] [--san HOST_OR_IP]… [--days N]` writes DIR/NAME.pem and
DIR/NAME-key.pem, signed by DIR's CA. No file is ever overwritten; bad arguments write nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import stat

from common import pki
from common.escape import escape
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json

DEFAULT_DIR = "formation-tls"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
DEFAULT_DAYS = 365
SHOWN_MAX = 200  # a path in a message: never echo a huge argument whole


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tls", parents=[parent], help="make the cluster's CA and certificates",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(run=usage, needs_client=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION")  # ctl's one-line Parser
    init = actions.add_parser("init", parents=[parent], help="make a new cluster CA",
                              description="Make a cluster CA: DIR/ca.pem and DIR/ca-key.pem.")
    init.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                      help=f"where to write (default ./{DEFAULT_DIR}; made with mode 0700)")
    init.set_defaults(run=run_init, needs_client=False)
    issue = actions.add_parser("issue", parents=[parent], help="issue a certificate",
                               description="Issue DIR/NAME.pem and DIR/NAME-key.pem, signed "
                                           "by DIR's CA.")
    issue.add_argument("role", metavar="ROLE", help=" | ".join(pki.ROLES))
    issue.add_argument("name", metavar="NAME", help="the agent's, scheduler's or user's name")
    issue.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                       help=f"the CA's directory, where to write (default ./{DEFAULT_DIR})")
    issue.add_argument("--san", action="append", default=[], metavar="HOST_OR_IP",
                       help="another host name or IP address the certificate answers for")
    issue.add_argument("--days", default=str(DEFAULT_DAYS), metavar="N",
                       help=f"valid for N days (default {DEFAULT_DAYS}, at most "
                            f"{pki.MAX_DAYS}, not past the CA)")
    issue.set_defaults(run=run_issue, needs_client=False)


def usage(args: argparse.Namespace) -> int:
    raise CtlError("usage: ctl tls init [--dir DIR] | ctl tls issue ROLE NAME [--dir DIR] "
                   "[--san HOST_OR_IP]... [--days N]", USAGE)


def shown(path: str) -> str:
    """A path for a terminal: undecodable bytes as \\xNN, control characters escaped, cut."""
    text = escape(path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "…"


def check_dir(path: str) -> str:
    if not path or "\0" in path:
        raise CtlError(f"--dir must name a directory, not {shown(path)!r}", USAGE)
    return path


def parse_days(text: str) -> int:
    """--days: a whole decimal number (ASCII digits only: no '1e3', 'inf', '-1', '٣')."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and
            1 <= int(text) <= pki.MAX_DAYS):
        raise CtlError(f"--days must be a whole number from 1 to {pki.MAX_DAYS}, not "
                       f"{shown(text)!r}", USAGE)
    return int(text)


def refuse_existing(paths: list[str]) -> None:
    for path in paths:
        if os.path.lexists(path):  # a dangling symlink counts: it is not ours to replace
            raise CtlError(f"{shown(path)} already exists: not overwriting it")


def read_file(path: str, what: str) -> bytes:
    """A CA file, at most MAX_PEM_BYTES; a FIFO or device planted there is refused unread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CtlError(f"no CA in {shown(os.path.dirname(path) or '.')} ({what} "
                       f"{shown(path)} is missing): run `ctl tls init` first") from None
    except OSError as e:
        raise CtlError(f"cannot read the {what} {shown(path)}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
        os.close(fd)
        raise CtlError(f"the {what} {shown(path)} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(pki.MAX_PEM_BYTES + 1)
        except OSError as e:
            raise CtlError(f"cannot read the {what} {shown(path)}: {e.strerror}") from None
    if len(data) > pki.MAX_PEM_BYTES:
        raise CtlError(f"the {what} {shown(path)} is larger than {pki.MAX_PEM_BYTES} bytes")
    return data


def write_pair(key_path: str, key_pem: bytes, cert_path: str, cert_pem: bytes) -> None:
    """Write the key (0600), then the certificate; if either fails, neither is left."""
    written: list[str] = []
    try:
        for path, data, write in ((key_path, key_pem, pki.write_private),
                                  (cert_path, cert_pem, pki.write_public)):
            try:
                write(path, data)
            except FileExistsError:
                raise CtlError(f"{shown(path)} already exists: not overwriting it") from None
            except OSError as e:
                raise CtlError(f"cannot write {shown(path)}: {e.strerror}") from None
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat(timespec="seconds")


def expires(cert_pem: bytes) -> str:
    return iso(datetime.datetime.fromtimestamp(pki.expiry(cert_pem), datetime.UTC))


def run_init(args: argparse.Namespace) -> int:
    d = check_dir(args.dir)
    ca_path, key_path = os.path.join(d, CA_FILE), os.path.join(d, CA_KEY_FILE)
    made = False
    try:
        if os.path.lexists(d) and not os.path.isdir(d):
            raise CtlError(f"--dir {shown(d)} is not a directory")
        if not os.path.lexists(d):
            os.makedirs(d, mode=0o700)  # the last part 0700 (less with a strict umask)
            made = True
    except OSError as e:
        raise CtlError(f"cannot make the directory {shown(d)}: {e.strerror}") from None
    try:
        refuse_existing([ca_path, key_path])
        cert_pem, key_pem = pki.make_ca()
        write_pair(key_path, key_pem, ca_path, cert_pem)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only if empty: we made it, and wrote nothing into it
        raise
    when = expires(cert_pem)
    if args.json:
        emit_json({"ca": ca_path, "key": key_path, "expires": when})
        return 0
    print(f"wrote {shown(ca_path)}: the cluster CA certificate (expires {when})")
    print(f"wrote {shown(key_path)}: its private key (mode 0600): keep it secret, off the "
          "cluster's machines")
    where = "" if d == DEFAULT_DIR else f" --dir {shlex.quote(shown(d))}"
    print(f"next: ctl tls issue scheduler NAME{where}")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    # Every argument is checked before any file is read or written.
    d = check_dir(args.dir)
    days = parse_days(args.days)
    try:
        pki.check_request(args.role, args.name, args.san, days)
    except pki.PkiError as e:
        raise CtlError(str(e), USAGE) from None
    cert_path = os.path.join(d, f"{args.name}.pem")
    key_path = os.path.join(d, f"{args.name}-key.pem")
    ca_path = os.path.join(d, CA_FILE)
    if os.path.lexists(d) and not os.path.isdir(d):
        raise CtlError(f"--dir {shown(d)} is not a directory")
    ca_pem = read_file(ca_path, "CA certificate")
    ca_key_pem = read_file(os.path.join(d, CA_KEY_FILE), "CA key")
    refuse_existing([cert_path, key_path])
    try:
        cert_pem, key_pem = pki.issue(ca_pem, ca_key_pem, args.role, args.name, args.san, days)
    except pki.CaError as e:
        raise CtlError(f"{shown(ca_path)}: {e}") from None
    except pki.PkiError as e:  # --days past the CA's expiry
        raise CtlError(str(e), USAGE) from None
    write_pair(key_path, key_pem, cert_path, cert_pem)
    when = expires(cert_pem)
    if args.json:
        emit_json({"cert": cert_path, "key": key_path, "role": args.role, "name": args.name,
                   "expires": when})
        return 0
    print(f"wrote {shown(cert_path)}: {args.role} {args.name} (expires {when})")
    print(f"wrote {shown(key_path)}: its private key (mode 0600)")
    return 0
