"""`ctl`: what a person types. Uses only the scheduler's public gRPC API (the Control service)."""
import os

# ctl (like `ctl dev` and the test harness built on it) starts processes with a preexec_fn, so
# with fork(), not vfork(), while it holds gRPC channels. gRPC's fork handlers may then restart
# its poller in the child, where close_fds has closed the poller's epoll fd: the child logs
# "epoll_wait error: Bad file descriptor" and may hang or abort before it execs. Nothing of ours
# uses gRPC in a forked child, so gRPC's fork support stays off (read when gRPC starts).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# gRPC's C core logs a failed TLS handshake on stderr; ctl says it in its own one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
