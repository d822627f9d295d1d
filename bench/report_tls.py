"""The parts of the benchmark report that set plaintext and mutual TLS side by side: the API
round trip (bench/api.py) and the scale-up with simulated agents (bench/controlplane.py)."""
from __future__ import annotations

from bench.fmt import f, ms, ratio


def simulated_rows(sim: dict) -> list[str]:
    """The scale-up with simulated agents: a row per mode, their ratio, and the side figures."""
    head = f"{sim['agents']} simulated agents, scale 0 → {sim['instances']:,} reported running"
    p, t = sim["plaintext"], sim["tls"]
    out = [f"| {head}, {label} | {f(x['seconds_to_running'])} ({f(x['min'])}–{f(x['max'])}): "
           f"{x['placements_per_second']:,.0f} placements/s |"
           for label, x in (("plaintext", p), ("mutual TLS", t))]
    out.append(f"| … TLS / plaintext | {ratio(t['placements_per_second'], p['placements_per_second'])}"
               f" the placements/s ({ratio(t['seconds_to_running'], p['seconds_to_running'])} "
               "the time) |")
    for label, key, fmt in (("… and back to 0", "seconds_to_zero", f),
                            ("scheduler CPU for the scale-up", "scheduler_cpu_seconds",
                             lambda x: f"{x:.2f} s"),
                            ("scheduler peak resident memory", "scheduler_peak_rss_mib",
                             lambda x: f"{x:.0f} MiB"),
                            ("etcd requests for the scale-up", "etcd_requests",
                             lambda x: f"{x:.0f}")):
        out.append(f"| {label} | plaintext {fmt(p[key])}, TLS {fmt(t[key])} |")
    return out


def api_round_trip(rt: dict) -> list[str]:
    """`ctl scale c=+1` → running, and what a call and a new connection cost, both ways."""
    if not rt:
        return []
    out = ["\n## `ctl scale c=+1` → running, through the API: plaintext and mutual TLS\n",
           "| figure | plaintext | mutual TLS | TLS / plaintext |\n|---|---|---|---|"]
    for label, key, q in (("`Scale` c=N → c.N reported running, p50", "scale", "p50"),
                          ("… p99", "scale", "p99"),
                          ("`GetFormation` on an open connection, p50", "open_call", "p50"),
                          ("a new connection and one `GetFormation` (what each `ctl` command "
                           "pays), p50", "new_connection", "p50")):
        p, t = rt[key]["plaintext"][q], rt[key]["tls"][q]
        out.append(f"| {label} ({rt[key]['tls']['n']} rounds) | {ms(p)} | {ms(t)} | "
                   f"{ratio(t, p)} |")
    out.append(API_TLS)
    return out


API_TLS = """
Two one-agent clusters run side by side, one plaintext and one with mutual TLS, and the rounds
alternate between them, so a busy machine slows both alike. What TLS costs, and where:

- **A handshake per new connection**: a TLS 1.3 handshake with client certificates (an ECDHE
  key exchange; on each side an ECDSA P-256 signature made and the peer's certificate checked
  against the cluster CA), plus, in `ctl`, reading and checking its three certificate files.
  `ctl` opens one connection per command, so every command pays this once (the new-connection
  row, measured in-process; a real `ctl` command adds its own Python start-up). Agents pay it
  when they (re)connect, the scheduler when it first reads an agent's logs.
- **Symmetric crypto per message** on a connection that stays open (ctl's client here, each
  agent's link, the scheduler's channels to agents): every message is encrypted and
  authenticated (AES-GCM where the CPU has AES instructions), for the small messages of the
  control plane a small part of a call (the open-connection row). The scale rows ride an open
  connection, as do the agents' assignment and status messages, so they pay only this."""

SIMULATED_TLS = """
The scale-up with simulated agents runs on two clusters side by side, one plaintext and one with
mutual TLS, {rounds} rounds each, alternating; the figures are medians (min–max). Each simulated
agent holds one connection with a certificate of its own name, opened before the clock starts,
so the scale-up pays no handshake, only the crypto of each message: the assignment lists pushed
to the agents and the 10,000 status reports back. etcd is plaintext (http) in both."""

READ_MODELS_TLS = """
The read-model rows run twice, on a cluster with mutual TLS and on a plaintext one, one after
the other. With TLS each reader process opens one connection as a viewer, with its own
certificate of the cluster's CA (the channel `Cluster.channel` opens), and keeps it, so the
readers pay the crypto of each message, not handshakes. A `ListInstances` page is up to 2 MiB:
hundreds of such replies a second are hundreds of MB/s to encrypt in the scheduler and decrypt
in the readers, on the same 2 cores as the scheduler's loop, which is what TLS adds to a
`Scale` under readers."""

READ_MODELS_PLAINTEXT = """
The read-model rows ran plaintext."""


def control_plane_notes(sim: dict | None, rm: dict | None) -> list[str]:
    """Under the control-plane table: how TLS enters its rows."""
    out = [SIMULATED_TLS.format(rounds=sim["rounds"])] if sim else []
    if rm:
        out.append(READ_MODELS_TLS if rm.get("tls") else READ_MODELS_PLAINTEXT)
    return out
