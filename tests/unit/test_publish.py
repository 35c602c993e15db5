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


# -- replicas: one entry per ready pod ------------------------------------------------------------------


def pod(name: str, ip: str | None = "10.0.0.1", ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def llm_of(runtime: str, pool: str | None = None) -> dict[str, Any]:
    body = llm("sdc", "gemma", pool=pool)
    body["spec"]["runtime"] = runtime
    return body


@pytest.mark.parametrize(
    ("case", "runtime", "pods", "want"),
    [
        (
            "two ready pods: two replicas by pod IP, with metrics",
            "vllm",
            [pod("gemma-b", "10.0.0.2"), pod("gemma-a", "10.0.0.1")],
            [
                ("gemma-a", "http://10.0.0.1:8000/v1", "http://10.0.0.1:8000/metrics"),
                ("gemma-b", "http://10.0.0.2:8000/v1", "http://10.0.0.2:8000/metrics"),
            ],
        ),
        (
            "not ready, no IP yet and terminating pods are left out",
            "vllm",
            [
                pod("gemma-a", "10.0.0.1"),
                pod("gemma-b", "10.0.0.2", ready=False),
                pod("gemma-c", None),
                pod("gemma-d", "10.0.0.4", deleting=True),
            ],
            [("gemma-a", "http://10.0.0.1:8000/v1", "http://10.0.0.1:8000/metrics")],
        ),
        (
            "no ready pod seen yet: the Service entry as before, no metrics",
            "vllm",
            [pod("gemma-a", "10.0.0.1", ready=False)],
            [(None, "http://gemma.sdc.svc:8000/v1", None)],
        ),
        (
            "ollama's metrics come from its pod's exporter, on the same port",
            "ollama",
            [pod("gemma-a", "10.0.0.1")],
            [("gemma-a", "http://10.0.0.1:8000/v1", "http://10.0.0.1:8000/metrics")],
        ),
        (
            "an IPv6 pod IP is bracketed",
            "transformers",
            [pod("gemma-a", "fd00::5")],
            [("gemma-a", "http://[fd00::5]:8000/v1", "http://[fd00::5]:8000/metrics")],
        ),
    ],
)
def test_replicas_from_pods(
    case: str, runtime: str, pods: list[dict[str, Any]], want: list[tuple[str | None, str, str | None]]
) -> None:
    document = json.loads(endpoints_document([llm_of(runtime)], None, {("sdc", "gemma"): pods}))
    got = [(e["replica"], e["baseUrl"], e["metricsUrl"]) for e in document["endpoints"]]
    assert got == want, case
    for entry in document["endpoints"]:  # every replica keeps what the orchestrator filters and weighs by
        assert entry["name"] == "sdc/gemma" and entry["model"] == "google/gemma-2-9b-it", case
        assert (entry["namespace"], entry["localLLM"], entry["weight"], entry["role"]) == ("sdc", "gemma", 100, "chat")
        assert entry["runtime"] == runtime, case


def test_replicas_only_of_published_llms() -> None:
    """A LocalLLM that is not Ready, or not in the audience, publishes no pod even if its pods are ready."""
    pods = {("sdc", "starting"): [pod("starting-a")], ("team-b", "gemma"): [pod("gemma-x")]}
    document = json.loads(endpoints_document(CLUSTER, audience("sdc", [], None), pods))
    assert [(e["name"], e["replica"]) for e in document["endpoints"]] == [("sdc/gemma", None)]


def test_without_pods_the_document_is_unchanged() -> None:
    """Callers that pass no pods (and old documents) keep the one-entry-per-LocalLLM shape."""
    [entry] = json.loads(endpoints_document([llm("sdc", "gemma")]))["endpoints"]
    assert entry["baseUrl"] == "http://gemma.sdc.svc:8000/v1" and "replica" not in entry


# -- scale from zero: models without a ready pod, under `unready` -------------------------------------------------


def test_models_at_zero_are_published_apart() -> None:
    """At zero (or starting) a model is under `unready` with replicas/atZero/phase and no baseUrl; `endpoints`
    keeps its old shape, so an older orchestrator still reads the file; a Failed model is in neither."""
    zero = llm("sdc", "sleepy", phase="Pending")
    zero["spec"]["replicas"] = 0
    zero["spec"]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 60}
    waking = llm("sdc", "waking", phase="Starting")
    broken = llm("sdc", "broken", phase="Failed")
    document = json.loads(endpoints_document([llm("sdc", "gemma"), zero, waking, broken], audience("sdc", [], None)))
    assert [e["name"] for e in document["endpoints"]] == ["sdc/gemma"]
    assert "autoscaling" not in document["endpoints"][0]
    got = [(e["name"], e["replicas"], e["atZero"], e["phase"], "baseUrl" in e) for e in document["unready"]]
    assert got == [("sdc/sleepy", 0, True, "Pending", False), ("sdc/waking", 1, False, "Starting", False)]
    assert document["unready"][0]["autoscaling"]["scaleDownDelaySeconds"] == 60
    assert document["unready"][0]["model"] == "google/gemma-2-9b-it"


def test_no_unready_key_without_such_models() -> None:
    assert list(json.loads(endpoints_document([llm("sdc", "gemma")], audience("sdc", [], None)))) == ["endpoints"]
