"""The example worker process: prints a line every second until SIGTERM."""
import os
import signal
import sys
import time

stopping = False


def stop(*_: object) -> None:
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
instance = os.environ.get("FORMATION_INSTANCE", "worker")
n = 0
while not stopping:
    n += 1
    print(f"{instance} tick {n}", flush=True)
    time.sleep(1)
print(f"{instance} stopped after {n} ticks", flush=True)
sys.exit(0)
