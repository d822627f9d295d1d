"""The floor: a bare asyncio loop that spawns the same children with nothing else (pidfd child
watcher, own session each), respawns them at once when they exit, and takes `scale N` lines on
stdin. What no manager can beat on this machine."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys


async def main(argv: list[str]) -> None:
    loop = asyncio.get_running_loop()
    if sys.version_info < (3, 12):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
    slots: dict[int, asyncio.Task] = {}

    async def keep(slot: int) -> None:
        while True:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                        start_new_session=True)
            try:
                await proc.wait()
            except asyncio.CancelledError:
                os.killpg(proc.pid, signal.SIGTERM)
                await proc.wait()
                raise

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.split()
        if words[:1] == [b"scale"]:
            n = int(words[1])
            for slot in range(n):
                if slot not in slots:
                    slots[slot] = asyncio.create_task(keep(slot))
            gone = [slots.pop(s) for s in list(slots) if s >= n]
            for t in gone:
                t.cancel()
            await asyncio.gather(*gone, return_exceptions=True)
    for t in slots.values():
        t.cancel()
    await asyncio.gather(*slots.values(), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
