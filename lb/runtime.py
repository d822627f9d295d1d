"""HAProxy's runtime API (the `stats socket ... level admin` of haproxy.py), spoken from
asyncio: one connection per round of changes, in prompt mode, commands sent in batches.

Prompt mode ends every reply with "\\n> ", which tells where a reply ends without closing the
connection; `set severity-output number` prefixes every message with its syslog severity, so
an error ("[3]: No such server.") is told from a success ("[6]: Server deleted.", or nothing)
without knowing each command's wording. A command is sent only if it is made of the few
characters formation-lb's own commands use: a newline or `;` would start another command.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

COMMAND = re.compile(r"[A-Za-z0-9 _.:/\[\]-]{1,1024}")
PROMPT = b"\n> "
_ERROR = re.compile(r"\[[0-3]\]: ")   # emergency .. error
_UNKNOWN = re.compile(r"(\[\d\]: )?Unknown command")
REPLY_LIMIT = 64 * 2**20  # `show stat` of 30,000 servers, plus as many removing, is ~30 MB
TIMEOUT = 5.0             # seconds for connecting, and for each batch of replies
BATCH = 500               # commands sent before their replies are read


class Unavailable(Exception):
    """The runtime API did not answer (HAProxy gone, or stuck): nothing is known of the command
    that was being sent."""


@dataclass(frozen=True)
class Reply:
    command: str
    text: str
    ok: bool

    def message(self) -> str:
        """The reply on one line, severity prefix and blank lines gone."""
        return " ".join(re.sub(r"^\[\d\]: ", "", self.text.strip()).split()) or "(no reply)"


def succeeded(reply: str) -> bool:
    """Is this reply (severities numbered) one of success? Errors are severity 0-3; an
    unknown command is answered with help at severity 6, so it is told by its words."""
    return not (_ERROR.match(reply) or _UNKNOWN.match(reply))


class Session:
    """One connection: commands go one at a time, each reply read to its prompt."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def run(self, command: str) -> Reply:
        return (await self.run_all([command]))[0]

    async def run_all(self, commands: list[str]) -> list[Reply]:
        """Every command, whatever the replies, in order. They are sent BATCH at a time before
        their replies are read (HAProxy reads its input line by line), so thousands of changes
        take a fraction of the round trips; the replies of a batch fit the socket's buffers."""
        for command in commands:
            if not COMMAND.fullmatch(command):
                raise ValueError(f"refusing to send a runtime command of unexpected "
                                 f"characters: {command[:80]!r}")
        replies = []
        for i in range(0, len(commands), BATCH):
            batch = commands[i:i + BATCH]
            texts = await self._exchange(batch)
            replies += [Reply(c, t, succeeded(t)) for c, t in zip(batch, texts, strict=True)]
        return replies

    async def _exchange(self, lines: list[str]) -> list[str]:
        try:
            self._writer.write("".join(f"{line}\n" for line in lines).encode("ascii"))
            async with asyncio.timeout(TIMEOUT):
                await self._writer.drain()
                replies = [await self._reader.readuntil(PROMPT) for _ in lines]
        except (OSError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as e:
            raise Unavailable(f"HAProxy's runtime API: {type(e).__name__} {e}".strip()) from None
        return [data[:-len(PROMPT)].decode("utf-8", "replace") for data in replies]


class Runtime:
    """The API at one socket path; sessions take turns (one lock), so what a session reads
    and then changes is not changed by another in between."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A connection in prompt mode with numbered severities; Unavailable if there is none."""
        async with self._lock:
            try:
                async with asyncio.timeout(TIMEOUT):
                    reader, writer = await asyncio.open_unix_connection(self.path,
                                                                        limit=REPLY_LIMIT)
            except (OSError, TimeoutError) as e:
                raise Unavailable(f"HAProxy's runtime API at {self.path}: "
                                  f"{getattr(e, 'strerror', None) or type(e).__name__}"
                                  ) from None
            try:
                s = Session(reader, writer)
                await s._exchange(["prompt", "set severity-output number"])
                yield s
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def answers(self) -> bool:
        """Does HAProxy answer on its socket right now?"""
        try:
            async with self.session() as s:
                return (await s.run("show info")).ok
        except Unavailable:
            return False
