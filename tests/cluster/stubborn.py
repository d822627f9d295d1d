"""An instance that ignores SIGTERM (tests of stop_timeout and fencing): `python3 stubborn.py DIR`.

It takes an exclusive flock on DIR/$FORMATION_INSTANCE.lock first; if another copy of the same
instance holds it, it appends "ID PID" to DIR/SECOND and exits 97 (see oracles.once). It appends
"start ID PID TIME" and, for each SIGTERM it ignores, "term ID PID TIME" (unix time) to
DIR/events. Only SIGKILL ends it. Standard library only: the agent runs it with the system's
python3.
"""
import fcntl
import os
import signal
import sys
import time


def note(directory: str, text: str) -> None:
    with open(os.path.join(directory, "events"), "a") as f:
        f.write(f"{text} {time.time():.6f}\n")


def main() -> None:
    directory = sys.argv[1]
    iid = os.environ["FORMATION_INSTANCE"]
    lock = open(os.path.join(directory, f"{iid}.lock"), "w")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(os.path.join(directory, "SECOND"), "a") as f:
            f.write(f"{iid} {os.getpid()}\n")
        sys.exit(97)
    signal.signal(signal.SIGTERM, lambda *_: note(directory, f"term {iid} {os.getpid()}"))
    note(directory, f"start {iid} {os.getpid()}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
