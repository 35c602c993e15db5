"""The NetworkPolicy of one LocalLLM's engine pods, where the chart renders none (see engine_network)."""

from __future__ import annotations

from typing import Any

from sdc_operator.builders.common import LocalLLM, metadata, resource_name, selector
from sdc_operator.engine_network import EngineNetworkPolicy, egress_rules

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def network_policy(llm: LocalLLM, port: int, config: EngineNetworkPolicy | None) -> dict[str, Any] | None:
    """Ingress to the engine port from the release's orchestrator (and the configured extra peers) only;
    egress as configured. None where the chart's policy covers the namespace or policies are off."""
    if config is None or llm.namespace in config.chart_namespaces:
        return None
    orchestrator = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: config.orchestrator_namespace}},
        "podSelector": {"matchLabels": dict(config.orchestrator_labels)},
    }
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": selector(llm)},
        "policyTypes": ["Ingress"],
        # One port: the engine's API (Ollama's admin routes included) and its /metrics, nothing else of the pod.
        "ingress": [
            {"from": [orchestrator, *config.ingress_from], "ports": [{"port": port, "protocol": "TCP"}]},
        ],
    }
    if config.egress is not None:
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = egress_rules(config.egress)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(llm, resource_name(llm)),
        "spec": spec,
    }
