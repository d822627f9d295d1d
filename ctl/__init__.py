"""`ctl`: what a person types. Uses only the scheduler's public gRPC API (the Control service)."""
