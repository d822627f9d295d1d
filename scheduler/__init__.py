"""Formation's scheduler: stores the formation in etcd, places instances on agents, pushes assignments."""
