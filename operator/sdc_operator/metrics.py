"""Prometheus metrics of the operator."""

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("sdc_operator_reconciles_total", "Reconciles of LocalLLM children", ["result"])
STATUS_WRITES = Counter("sdc_operator_status_writes_total", "LocalLLM status patches")
APPLIES = Counter("sdc_operator_applies_total", "Server-side applies by kind", ["kind"])
ERRORS = Counter("sdc_operator_errors_total", "Errors by step", ["step"])
DURATION = Histogram("sdc_operator_reconcile_seconds", "Time to reconcile a LocalLLM's children")
MODELS = Gauge("sdc_operator_models", "LocalLLMs by phase", ["phase"])
