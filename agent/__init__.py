"""Formation's agent: runs its assigned instances as foreground children on one machine."""
