"""The Service in front of the serving pods, and the endpoint URL it gives."""

from __future__ import annotations

from typing import Any

from sdc_operator.builders.common import LocalLLM, metadata, resource_name, selector


def service(llm: LocalLLM, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(llm, resource_name(llm)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(llm),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoint_url(llm: LocalLLM, port: int, cluster_domain: str) -> str:
    return f"http://{resource_name(llm)}.{llm.namespace}.svc.{cluster_domain}:{port}/v1"
