"""formation-lb's metrics (served at --metrics /metrics), in a leaf module the measured code
imports."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

SERVERS = Gauge("formation_lb_servers",
                "HAProxy servers by formation-lb's state: active (balanced to while its "
                "health check passes) or removing (in maintenance, waiting for its "
                "connections to end before it is deleted).", ["state"])
SETS = Counter("formation_lb_endpoint_sets_total",
               "Endpoint sets received, by result: applied (acknowledged once the servers it "
               "removed have no request in flight; invalid endpoints left out of it: "
               "formation_lb_endpoints_left_out), refused (more endpoints than formation-lb "
               "takes: the servers before it stay), failed (a removal did not take effect: "
               "not acknowledged).", ["result"])
LEFT_OUT = Gauge("formation_lb_endpoints_left_out",
                 "Endpoints of the last set received that formation-lb left out as invalid "
                 "(an address it cannot use, a malformed name, another app or type): their "
                 "servers are not balanced to; the rest of the set is applied and "
                 "acknowledged. 0 when none; a warning names the first reason.")
RUNTIME_ERRORS = Counter("formation_lb_runtime_errors_total",
                         "Runtime-API commands HAProxy refused or did not answer (stats "
                         "reads included), and host names that did not resolve.")
CONNECTED = Gauge("formation_lb_connected",
                  "1 while a WatchEndpoints stream is up (it gave a set), else 0.")
VERSION = Gauge("formation_lb_endpoints_version",
                "The version of the endpoint set HAProxy has applied last.")
