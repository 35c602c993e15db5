"""Prometheus metrics of the runtime: throughput, queue depth, KV usage, prefix cache and latency.

The engine-facing series carry vLLM's names and its `model_name` label, so one dashboard, alert or
engine-aware router reads sdc-runtime and vLLM pods alike: `vllm:num_requests_waiting`,
`vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (0..1), `vllm:prefix_cache_queries_total` and
`vllm:prefix_cache_hits_total` (prompt tokens looked up and found, as vLLM counts them),
`vllm:prompt_tokens_total` and `vllm:generation_tokens_total`. What vLLM has no name for keeps ours.
"""

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("sdc_runtime_requests_total", "Requests by endpoint and outcome", ["endpoint", "outcome"])
LATENCY = Histogram("sdc_runtime_request_seconds", "Request latency by endpoint", ["endpoint"])
BATCH_SIZE = Histogram("sdc_runtime_batch_size", "Rows per decode step", buckets=(1, 2, 4, 8, 16, 32, 64))
TOKENS_PER_SECOND = Gauge("sdc_runtime_tokens_per_second", "Aggregate tokens per second of the last decode step")

_MODEL = ["model_name"]
WAITING = Gauge("vllm:num_requests_waiting", "Requests waiting for a row in the batch", _MODEL)
RUNNING = Gauge("vllm:num_requests_running", "Requests in the running batch", _MODEL)
KV_USAGE = Gauge(
    "vllm:kv_cache_usage_perc",
    "KV cache in use by the running batch (rows x columns) over its capacity (max batch x context), 0..1",
    _MODEL,
)
PREFIX_QUERIES = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache", _MODEL)
PREFIX_HITS = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache (prefill skipped)", _MODEL)
PROMPT_TOKENS = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests", _MODEL)
GENERATION_TOKENS = Counter("vllm:generation_tokens", "Completion tokens generated", _MODEL)


@dataclass(frozen=True)
class ModelMetrics:
    """The per-model series, bound to one `model_name` (an engine reports through one of these)."""

    waiting: Any
    running: Any
    kv_usage: Any
    prefix_queries: Any
    prefix_hits: Any
    prompt_tokens: Any
    generation_tokens: Any

    @classmethod
    def of(cls, model_name: str) -> "ModelMetrics":
        return cls(
            *(
                family.labels(model_name=model_name)
                for family in (
                    WAITING,
                    RUNNING,
                    KV_USAGE,
                    PREFIX_QUERIES,
                    PREFIX_HITS,
                    PROMPT_TOKENS,
                    GENERATION_TOKENS,
                )
            )
        )
