"""Prometheus metrics of the orchestrator."""

from prometheus_client import Counter, Histogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
REQUESTS = Counter("sdc_orchestrator_requests_total", "Chat requests", ["provider", "model", "outcome"])
LATENCY = Histogram("sdc_orchestrator_request_seconds", "End-to-end latency", ["provider", "model"], buckets=BUCKETS)
TTFT = Histogram(
    "sdc_orchestrator_time_to_first_token_seconds", "Time to first streamed token", ["provider"], buckets=BUCKETS
)
TOKENS = Counter("sdc_orchestrator_tokens_total", "Tokens reported by backends", ["provider", "direction"])
FALLBACKS = Counter(
    "sdc_orchestrator_fallbacks_total",
    "Requests answered by a provider other than the first",
    ["from_provider", "to_provider"],
)
ATTEMPT_ERRORS = Counter("sdc_orchestrator_attempt_errors_total", "Failed upstream attempts", ["provider", "kind"])
COOLDOWNS = Counter("sdc_orchestrator_cooldowns_total", "Endpoints put in cool-down", ["endpoint"])
OVERHEAD = Histogram("sdc_orchestrator_overhead_seconds", "Time the orchestrator itself added", buckets=BUCKETS)
KEY_REQUESTS = Counter(
    "sdc_orchestrator_key_requests_total",
    "Requests per API key name (never the key) and what the gateway did with them",
    ["key", "outcome"],
)
GATEWAY_REQUESTS = Counter(
    "sdc_orchestrator_gateway_requests_total",
    "Requests by what the gateway did with them (all keys together)",
    ["outcome"],
)
STREAMS = Counter("sdc_orchestrator_stream_outcomes_total", "Streamed chats by how they ended", ["provider", "outcome"])
IGNORED_FIELDS = Counter(
    "sdc_orchestrator_ignored_fields_total",
    "Fields of a seed-route body the API does not know, ignored as the seed's API ignored them",
    ["route"],
)
INGESTS = Counter("sdc_orchestrator_ingests_total", "Document uploads by how they ended", ["outcome"])
