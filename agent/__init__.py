"""Formation's agent: runs its assigned instances as foreground children on one machine."""
import os

from common import sdnotify

# gRPC's C core logs every failed TLS handshake (a port scan, a peer of another CA) at info
# level on stderr; the daemons say what matters in their own log lines.
# (Not passed on to instances: agent/runner.py's base_environment leaves out what we set.)
OWN_ENVIRONMENT = {} if "GRPC_VERBOSITY" in os.environ else {"GRPC_VERBOSITY": "ERROR"}
os.environ.update(OWN_ENVIRONMENT)


def base_environment() -> dict[str, str]:
    """What instances inherit from the agent: its environment without its own settings and
    what systemd meant for the agent alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FORMATION_")
            and k not in OWN_ENVIRONMENT and k not in sdnotify.PRIVATE_ENV}
