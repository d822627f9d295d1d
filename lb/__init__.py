"""formation-lb: HAProxy in front of a process type's instances, following the scheduler's
endpoints (Control.WatchEndpoints) and changing HAProxy's servers through its runtime API.

    main.py         flags, start and stop: the wiring
    servers.py      pure: an endpoint set checked and made into servers; the diff to HAProxy
    haproxy.py      HAProxy's configuration, and the process (start, ready, stop)
    runtime.py      HAProxy's runtime API over its unix socket
    balancer.py     applies a set to HAProxy (add, enable, drain to maintenance, delete)
    follow.py       the WatchEndpoints stream: fail-over, backoff, acknowledgements
    instruments.py  the formation_lb_* metrics
"""
