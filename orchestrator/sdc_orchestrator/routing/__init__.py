"""Engine-aware replica routing: which pod of a model serves a request (replicas, scrape, prefix_index, policy)."""
