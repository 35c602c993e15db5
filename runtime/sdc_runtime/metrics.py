"""Prometheus metrics of the runtime: throughput, queue depth and latency."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("sdc_runtime_requests_total", "Requests by endpoint and outcome", ["endpoint", "outcome"])
LATENCY = Histogram("sdc_runtime_request_seconds", "Request latency by endpoint", ["endpoint"])
PROMPT_TOKENS = Counter("sdc_runtime_prompt_tokens_total", "Prompt tokens processed")
GENERATED_TOKENS = Counter("sdc_runtime_generated_tokens_total", "Completion tokens generated")
QUEUE_DEPTH = Gauge("sdc_runtime_queue_depth", "Generation requests waiting for a row")
BATCH_SIZE = Histogram("sdc_runtime_batch_size", "Rows per decode step", buckets=(1, 2, 4, 8, 16, 32, 64))
TOKENS_PER_SECOND = Gauge("sdc_runtime_tokens_per_second", "Aggregate tokens per second of the last decode step")
RUNNING = Gauge("sdc_runtime_running_sequences", "Rows in the running batch")
