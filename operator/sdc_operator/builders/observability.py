"""What lets Prometheus find a model server's own metrics.

vLLM and sdc-runtime serve Prometheus metrics on their API port (`/metrics`:
tokens, queue, KV-cache use, time to first token); Ollama has none of its own,
and its pod's exporter sidecar serves them on the same port, in vLLM's names
(builders/ollama.py). The pod template carries the runtime as a label, which
the chart's PodMonitor selects on, and the `prometheus.io/*` annotations that
annotation-based scrape configs use.
"""

from __future__ import annotations

from typing import Any

from sdc_operator import GROUP
from sdc_operator.builders.common import LocalLLM, labels

RUNTIME_LABEL = f"{GROUP}/runtime"
SERVES_METRICS = ("vllm", "transformers", "ollama")


def pod_metadata(llm: LocalLLM, port: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {**labels(llm), RUNTIME_LABEL: llm.spec.runtime}}
    if llm.spec.runtime in SERVES_METRICS:
        meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    return meta
