"""The trivial Python child: its first statement writes a marker file named after its pid."""
import os
import sys

open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
import signal  # noqa: E402

signal.pause()
