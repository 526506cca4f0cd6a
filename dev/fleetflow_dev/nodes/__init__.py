"""Real nodes for the local fleet: one per cluster, each in a network namespace of its own."""
