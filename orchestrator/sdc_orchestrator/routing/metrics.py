"""Prometheus metrics of replica routing: what was decided and why, and how well the prefix index matches."""

from prometheus_client import Counter, Gauge

DECISIONS = Counter(
    "sdc_orchestrator_route_decisions_total",
    "Replica choices among two or more replicas, by reason: affinity (the longest cached prefix within the "
    "load bound), hash (consistent hashing with bounded loads: a prefix no replica holds yet), load (the "
    "prefix's holders are over the bound, or the request has no prompt text: the least loaded)",
    ["reason"],
)
PREFIX_BLOCKS = Counter(
    "sdc_orchestrator_prefix_index_blocks_total",
    "Prompt blocks the router's prefix index found (hit) or did not find (miss) on the chosen replica; "
    "hit / (hit + miss) is the router's own prefix hit ratio",
    ["result"],
)
SCRAPE_ERRORS = Counter(
    "sdc_orchestrator_replica_scrape_errors_total", "Replica /metrics pages that could not be read", ["replica"]
)
REPLICA_LOAD = Gauge(
    "sdc_orchestrator_replica_load", "The load score the router last gave a replica (lower is better)", ["replica"]
)
