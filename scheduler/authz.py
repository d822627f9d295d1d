"""Who may call what on the scheduler, by the role bound in the caller's certificate.

    role       Control                              AgentLink
    operator   everything                           -
    viewer     GetFormation, ListInstances,         -
               ListAgents, ListReleases, ListSchedulers,
               ListScales, Events, WatchEndpoints
               (not acknowledging; not Logs: apps
               print secrets; nor GetConfig: docs/security.md)
    lb         WatchEndpoints (acknowledging)       -
    agent      -                                    Connect, as its own name only
    scheduler  a call it forwards, judged as the        -
               caller it names (common/tls.caller_identity)

Checked only when the scheduler serves TLS; a plaintext scheduler (loopback, or --insecure)
trusts whoever can reach it. The name check of an agent's hello is in agentlink.py: the
policy sees the method, not the message.
"""
from __future__ import annotations

from common.identity import NO_ROLE, Identity

READ_ONLY = frozenset({"GetFormation", "ListInstances", "ListAgents", "ListReleases",
                       "ListScales", "ListSchedulers",
                       "Events",  # events name config vars, never values
                       "WatchEndpoints"})  # acknowledging needs lb or operator: endpointstream
# What a refusal says the caller may not do: "viewer may not scale".
ACTIONS = {"Deploy": "deploy", "Scale": "scale", "GetFormation": "read the formation",
           "ListInstances": "list instances", "ListAgents": "list agents",
           "ListReleases": "list releases", "ListScales": "read the formation history",
           "Drain": "drain agents", "RemoveAgent": "remove agents", "Logs": "read logs",
           "GetConfig": "read config vars", "SetConfig": "change config vars",
           "Rollback": "roll back", "Events": "read events",
           "Connect": "connect as an agent", "ListSchedulers": "list the schedulers",
           "WatchEndpoints": "watch endpoints"}


def _refusal(who: Identity | None, method: str) -> str:
    if who is None:
        return NO_ROLE
    return f"{who.role} may not {ACTIONS.get(method, method)}"


def control(method: str, who: Identity | None) -> str | None:
    """The Control service: operators do anything, viewers read (not logs), load balancers
    follow the endpoints."""
    if who is not None and (who.role == "operator"
                            or (who.role == "viewer" and method in READ_ONLY)
                            or (who.role == "lb" and method == "WatchEndpoints")):
        return None
    return _refusal(who, method)


def agent_link(method: str, who: Identity | None) -> str | None:
    """The AgentLink service: agents only."""
    return None if who is not None and who.role == "agent" else _refusal(who, method)

