"""What several of Formation's programs share: names and limits, the app definition (Procfile,
formation.toml) and its protobuf form, instance and agent states, small network helpers, the
HTTP server for /metrics, logging set-up. It imports nothing of `scheduler`, `agent` or `ctl`."""
