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

Replicas: one entry per ready pod, addressed by its IP (`baseUrl`
http://<podIP>:<port>/v1, `metricsUrl` beside it, `replica` the pod's name),
so the orchestrator sees every engine, its queue and its prefix cache and
chooses the pod itself; through the Service, kube-proxy would choose at
random and throw away each engine's prefix cache. Entries that share
(namespace, pool, model) are replicas of one model. `name` stays the
LocalLLM's `<namespace>/<name>`. A Ready LocalLLM none of whose pods the
operator has seen ready with an IP yet is published as before, once, with its
Service URL and no `metricsUrl`: routable, never silently missing.

Scale from zero: a LocalLLM this orchestrator serves that has no ready pod (at zero, or starting) is
listed under a second key, `unready`, with `replicas` (its spec.replicas), `atZero` (replicas is 0),
its `phase` and no `baseUrl`, so the orchestrator can hold a request for it, ask for one replica, and
send the request when the model appears under `endpoints`. A second key, not entries without a baseUrl
in `endpoints`: an older orchestrator reads `endpoints` only and would refuse the whole file otherwise.
Entries under both keys carry `autoscaling` (the spec's, camelCase) when it is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sdc_operator.spec import SERVING_PHASES

ENDPOINTS_KEY = "endpoints.json"
# Runtimes whose pods serve Prometheus metrics in vLLM's names on their API port: vLLM and sdc-runtime
# themselves, Ollama through its pod's exporter sidecar (builders/ollama.py).
METRICS_RUNTIMES = ("vllm", "transformers", "ollama")
Key = tuple[str, str]


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
    if status.get("phase") not in SERVING_PHASES or not status.get("endpoint"):
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


# Phases in which a model without a ready pod is coming (or can be brought) up: worth holding a request for.
# Failed is not: a request for it fails at once, as before.
WAKING_PHASES = ("Pending", "Downloading", "Starting")


def unready_entry(llm: dict[str, Any]) -> dict[str, Any] | None:
    """A LocalLLM with no serving endpoint that a held request may wait for, or None."""
    status = llm.get("status") or {}
    spec = llm.get("spec") or {}
    if status.get("phase", "Pending") not in WAKING_PHASES or not spec.get("runtime"):
        return None
    routing = spec.get("routing") or {}
    meta = llm["metadata"]
    replicas = int(spec.get("replicas", 1))
    entry = {
        "name": f"{meta['namespace']}/{meta['name']}",
        "namespace": meta["namespace"],
        "localLLM": meta["name"],
        "pool": routing.get("pool") or None,
        "runtime": spec.get("runtime"),
        "model": status.get("servedModelName")
        or (spec.get("model") or {}).get("servedName")
        or (spec.get("model") or {}).get("name"),
        "weight": int(routing.get("weight", 100)),
        "role": routing.get("role", "chat"),
        "replicas": replicas,
        "atZero": replicas == 0,
        "phase": status.get("phase", "Pending"),
    }
    if spec.get("autoscaling"):
        entry["autoscaling"] = dict(spec["autoscaling"])
    return entry


def pod_ready(pod: dict[str, Any]) -> bool:
    """Serving now: the kubelet reports it Ready (its readiness probe passes), it has an IP, it is not going."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # an IPv6 pod IP goes in brackets in a URL


def replica_entries(entry: dict[str, Any], pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One LocalLLM's entry made into one entry per ready pod (sorted by pod name), or [entry] if none is.

    The pod's port and path are the Service URL's: the Service forwards its port to the same container
    port (builders/service.py), and every engine serves the OpenAI API under /v1.
    """
    service = urlsplit(str(entry["baseUrl"]))
    ready = sorted((p for p in pods if pod_ready(p)), key=lambda p: str(p["metadata"]["name"]))
    if not ready or service.port is None:
        return [{**entry, "metricsUrl": None, "replica": None}]
    out = []
    for pod in ready:
        root = f"{service.scheme}://{_host(str(pod['status']['podIP']))}:{service.port}"
        out.append(
            {
                **entry,
                "baseUrl": f"{root}{service.path}",
                "metricsUrl": f"{root}/metrics" if entry.get("runtime") in METRICS_RUNTIMES else None,
                "replica": str(pod["metadata"]["name"]),
            }
        )
    return out


def endpoints_document(
    llms: list[dict[str, Any]],
    audience: Audience | None = None,
    pods: Mapping[Key, Iterable[dict[str, Any]]] | None = None,
) -> str:
    """The published file: the ready LocalLLMs `audience` admits (None: every one), sorted by name, each as
    one entry per ready pod of `pods[(namespace, name)]` (None: the Service entry alone, as before)."""
    chosen = [llm for llm in llms if audience is None or audience.admits(llm)]
    entries = []
    unready = []
    for llm in chosen:
        entry = endpoint_entry(llm)
        if entry is None:
            if (waiting := unready_entry(llm)) is not None:
                unready.append(waiting)
            continue
        if pods is None:
            entries.append(entry)
            continue
        entries.extend(replica_entries(entry, pods.get((entry["namespace"], entry["localLLM"])) or ()))
    entries.sort(key=lambda e: (str(e["name"]), str(e.get("replica") or "")))
    document: dict[str, Any] = {"endpoints": entries}
    if unready:  # only when there is one: a document without models at zero stays as it was
        document["unready"] = sorted(unready, key=lambda e: str(e["name"]))
    return json.dumps(document, indent=2, sort_keys=True)


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
