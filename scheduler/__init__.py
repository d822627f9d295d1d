"""Formation's scheduler: stores the formation in etcd, places instances on agents, pushes assignments."""
import os

# gRPC's C core logs every failed TLS handshake (a port scan, a peer of another CA) at info
# level on stderr; the daemons say what matters in their own log lines.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
