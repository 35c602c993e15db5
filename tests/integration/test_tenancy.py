"""Tenant isolation through the operator's published endpoints, on the local cluster.

Two namespaces serve the same model name; the other one with weight 1000. By
default the operator publishes only the release's namespace; opted in, both are
published, each entry saying where it came from, and the orchestrator keeps the
two apart (`<namespace>/<model>`). The published base URLs are cluster DNS names
this machine cannot reach, so the test points each namespace's entries at a
real fake backend of its own and counts who receives the prompts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdc_orchestrator.app import create_app
from sdc_orchestrator.settings import OrchestratorSettings

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, wait_phase
from tests.support.fake_openai import FakeBackend
from tests.support.servers import serve

MODEL = "google/gemma-2-9b-it"


@pytest.fixture
def tenants(kubectl: Kubectl) -> Iterator[tuple[str, str]]:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    suffix = uuid.uuid4().hex[:6]
    home, other = f"home-{suffix}", f"other-{suffix}"
    for ns in (home, other):
        kubectl("create", "namespace", ns)
    yield home, other
    for ns in (home, other):
        kubectl("delete", "namespace", ns, "--wait=false")


def published(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl("get", "configmap", "sdc-endpoints", "-n", namespace, "-o", "json", check=False)
    if not out.startswith("{"):
        return []
    return list(json.loads(json.loads(out)["data"]["endpoints.json"])["endpoints"])


def published_names(
    kubectl: Kubectl, namespace: str, want: list[str], operator: OperatorProcess
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []

    def check() -> bool:
        nonlocal entries
        entries = published(kubectl, namespace)
        return [e["name"] for e in entries] == want

    try:
        wait_until(f"published endpoints {want}", check, timeout=60)
    except AssertionError:
        print(operator.tail(60))
        raise
    return entries


def test_a_release_routes_only_to_its_tenants(
    kubectl: Kubectl, kubeconfig: Path, tmp_path: Path, tenants: tuple[str, str]
) -> None:
    home, other = tenants
    kubectl.apply(
        [
            localllm("gemma", home),
            localllm("gemma", other, routing={"weight": 1000}),  # same served name, ten times the weight
            localllm("pooled", home, routing={"pool": "gold"}),
        ]
    )
    operator = OperatorProcess(kubeconfig, home, tmp_path / "default.log")
    operator.start()
    try:
        for ns, name in ((home, "gemma"), (other, "gemma"), (home, "pooled")):
            wait_phase(kubectl, name, ns, "Ready", timeout=120)
        [entry] = published_names(kubectl, home, [f"{home}/gemma"], operator)
        assert entry["namespace"] == home and entry["localLLM"] == "gemma" and entry["pool"] is None
        assert entry["model"] == MODEL
    finally:
        operator.stop()

    # Opted in: another namespace is published too, each entry with its origin; the pool stays apart.
    operator = OperatorProcess(kubeconfig, home, tmp_path / "wider.log", SDC_PUBLISH_NAMESPACES=json.dumps([other]))
    operator.start()
    try:
        entries = published_names(kubectl, home, [f"{home}/gemma", f"{other}/gemma"], operator)
    finally:
        operator.stop()
    assert {e["namespace"] for e in entries} == {home, other}

    with ExitStack() as stack:
        fakes = {ns: FakeBackend(MODEL, answer=f"{ns} 답변") for ns in (home, other)}
        urls = {ns: stack.enter_context(serve(fake.app)) for ns, fake in fakes.items()}
        local = [{**e, "baseUrl": urls[e["namespace"]] + "/v1"} for e in entries]  # cluster DNS -> this machine
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(json.dumps({"endpoints": local}))

        def orchestrator(**env: Any) -> str:
            settings = OrchestratorSettings(
                llm_service_type="gemini",  # no seed endpoint: only what the operator published
                sdc_endpoints_file=endpoints,
                sdc_namespace=home,
                sdc_data_dir=tmp_path / f"data-{len(env)}",
                **env,
            )
            return stack.enter_context(serve(create_app(settings)))

        # The orchestrator filters too: even with both in the file, by default only its namespace serves.
        strict = orchestrator()
        assert httpx.get(f"{strict}/v1/models").json()["data"][1:] == [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "sdc"}
        ]
        for body in ({"message": "질문", "model": MODEL}, {"message": "질문", "provider": "auto"}):
            for _ in range(20):
                assert httpx.post(f"{strict}/api/v1/chat", json=body, timeout=10).status_code == 200
        assert fakes[other].calls == 0, "another namespace's LocalLLM received this release's prompts"
        assert fakes[home].calls == 40

        # Opted in on both sides: the same served name stays two models.
        wide = orchestrator(sdc_route_namespaces=other)
        ids = [m["id"] for m in httpx.get(f"{wide}/v1/models").json()["data"]]
        assert ids == ["auto", MODEL, f"{other}/{MODEL}"]
        for _ in range(20):
            assert (
                httpx.post(f"{wide}/api/v1/chat", json={"message": "q", "model": MODEL}, timeout=10).status_code == 200
            )
        assert fakes[other].calls == 0, "the plain name is the home namespace's model only"
        for _ in range(20):
            resp = httpx.post(f"{wide}/api/v1/chat", json={"message": "q", "model": f"{other}/{MODEL}"}, timeout=10)
            assert resp.status_code == 200 and resp.json()["response"] == f"{other} 답변"
        assert fakes[other].calls == 20 and fakes[home].calls == 60
