"""The ready endpoints, as the orchestrator reads them.

The operator writes one ConfigMap (`sdc-endpoints`) in the orchestrator's
namespace; the orchestrator mounts it as a file and reloads it when it changes.
So the orchestrator needs no Kubernetes API access at all, and a new model goes
live without a restart.

Tenancy: only the LocalLLMs meant for that orchestrator are published: those
in the namespaces it serves (by default its own, SDC_PUBLISH_NAMESPACES opts
more in) whose `routing.pool` equals its pool (SDC_PUBLISH_POOL; unset matches
unset). A LocalLLM in another team's namespace with weight 1000 or the same
served name is not published at all, so it cannot receive this orchestrator's
prompts. Each entry says where it came from (namespace, name, pool).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENDPOINTS_KEY = "endpoints.json"


@dataclass(frozen=True)
class Audience:
    """Which LocalLLMs one orchestrator serves: namespaces (None = every namespace) and a pool."""

    namespaces: frozenset[str] | None
    pool: str | None = None

    def admits(self, llm: dict[str, Any]) -> bool:
        meta = llm.get("metadata") or {}
        if self.namespaces is not None and meta.get("namespace") not in self.namespaces:
            return False
        routing = (llm.get("spec") or {}).get("routing") or {}
        return (routing.get("pool") or None) == (self.pool or None)


def audience(home: str, namespaces: list[str], pool: str | None) -> Audience:
    """`home` always; `namespaces` adds more, `*` means every namespace."""
    if "*" in namespaces:
        return Audience(None, pool or None)
    return Audience(frozenset({home, *namespaces}), pool or None)


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
        "namespace": meta["namespace"],
        "localLLM": meta["name"],
        "pool": routing.get("pool") or None,
        "runtime": spec.get("runtime"),
        "model": status.get("servedModelName") or (spec.get("model") or {}).get("name"),
        "baseUrl": status["endpoint"],
        "weight": int(routing.get("weight", 100)),
        "role": routing.get("role", "chat"),
    }


def endpoints_document(llms: list[dict[str, Any]], audience: Audience | None = None) -> str:
    """The published file: the ready LocalLLMs `audience` admits (None: every one), sorted by name."""
    chosen = [llm for llm in llms if audience is None or audience.admits(llm)]
    entries = sorted((e for e in map(endpoint_entry, chosen) if e), key=lambda e: str(e["name"]))
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
