"""The ready endpoints, as the orchestrator reads them.

The operator writes one ConfigMap (`sdc-endpoints`) in the orchestrator's
namespace; the orchestrator mounts it as a file and reloads it when it changes.
So the orchestrator needs no Kubernetes API access at all, and a new model goes
live without a restart.
"""

from __future__ import annotations

import json
from typing import Any

ENDPOINTS_KEY = "endpoints.json"


def endpoint_entry(llm: dict[str, Any]) -> dict[str, Any] | None:
    """One LocalLLM's entry, or None unless it is Ready (or Degraded but serving)."""
    status = llm.get("status") or {}
    if status.get("phase") not in ("Ready", "Degraded") or not status.get("endpoint"):
        return None
    spec = llm.get("spec") or {}
    routing = spec.get("routing") or {}
    meta = llm["metadata"]
    return {
        "name": f"{meta['namespace']}/{meta['name']}",
        "runtime": spec.get("runtime"),
        "model": status.get("servedModelName") or (spec.get("model") or {}).get("name"),
        "baseUrl": status["endpoint"],
        "weight": int(routing.get("weight", 100)),
        "role": routing.get("role", "chat"),
    }


def endpoints_document(llms: list[dict[str, Any]]) -> str:
    entries = sorted((e for e in map(endpoint_entry, llms) if e), key=lambda e: str(e["name"]))
    return json.dumps({"endpoints": entries}, indent=2, sort_keys=True)


def endpoints_configmap(name: str, namespace: str, document: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "sdc-operator", "app.kubernetes.io/component": "endpoints"},
        },
        "data": {ENDPOINTS_KEY: document},
    }
