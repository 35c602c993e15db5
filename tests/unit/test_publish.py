"""Which LocalLLMs the operator publishes to an orchestrator, and what each entry says about its origin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sdc_operator.publish import audience, endpoints_document


def llm(namespace: str, name: str, pool: str | None = None, weight: int = 100, phase: str = "Ready") -> dict[str, Any]:
    routing: dict[str, Any] = {"weight": weight}
    if pool:
        routing["pool"] = pool
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"runtime": "vllm", "model": {"name": "google/gemma-2-9b-it"}, "routing": routing},
        "status": {"phase": phase, "endpoint": f"http://{name}.{namespace}.svc:8000/v1"},
    }


CLUSTER = [
    llm("sdc", "gemma"),
    llm("team-b", "gemma", weight=1000),  # same served name, a bigger weight: must not join by default
    llm("team-c", "exaone"),
    llm("sdc", "pooled", pool="gold"),
    llm("team-b", "pooled", pool="gold"),
    llm("sdc", "starting", phase="Starting"),
]


@pytest.mark.parametrize(
    ("case", "namespaces", "pool", "want"),
    [
        ("default: the release's namespace only", [], None, ["sdc/gemma"]),
        ("one more namespace opted in", ["team-b"], None, ["sdc/gemma", "team-b/gemma"]),
        ("every namespace", ["*"], None, ["sdc/gemma", "team-b/gemma", "team-c/exaone"]),
        ("a named pool, own namespace", [], "gold", ["sdc/pooled"]),
        ("a named pool across namespaces", ["*"], "gold", ["sdc/pooled", "team-b/pooled"]),
    ],
)
def test_audience_selects_what_is_published(
    case: str, namespaces: list[str], pool: str | None, want: list[str]
) -> None:
    document = json.loads(endpoints_document(CLUSTER, audience("sdc", namespaces, pool)))
    assert [e["name"] for e in document["endpoints"]] == want, case


def test_entries_say_where_they_came_from() -> None:
    [entry] = json.loads(endpoints_document(CLUSTER, audience("sdc", [], "gold")))["endpoints"]
    assert entry["namespace"] == "sdc" and entry["localLLM"] == "pooled" and entry["pool"] == "gold"
