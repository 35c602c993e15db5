"""The /scale subresource on a real API server: kubectl scale, the CEL bounds, why a model is at zero, and the
orchestrator's one write (its ScaleClient, with the chart's own Role: patch on localllms/scale, nothing more)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdc_orchestrator.app import create_app
from sdc_orchestrator.scaling.client import SCALE_WRITES, ScaleClient
from sdc_orchestrator.settings import OrchestratorSettings

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, running_operator, wait_phase
from tests.support.fake_openai import FakeBackend
from tests.support.servers import serve

ENDPOINTS_NS = "sdc"


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # The tests make LocalLLMs in namespaces of their own: publish them all (by default only ENDPOINTS_NS).
    log_dir = tmp_path_factory.mktemp("operator")
    yield from running_operator(kubectl, kubeconfig, log_dir, ENDPOINTS_NS, SDC_PUBLISH_NAMESPACES='["*"]')


def document(kubectl: Kubectl) -> dict[str, Any]:
    out = kubectl("get", "configmap", "sdc-endpoints", "-n", ENDPOINTS_NS, "-o", "json", check=False)
    return dict(json.loads(json.loads(out)["data"]["endpoints.json"])) if out.startswith("{") else {}


def ready_reason(obj: dict[str, Any]) -> str:
    return next((str(c["reason"]) for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), "")


def orchestrator_client(kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path) -> ScaleClient:
    """A ScaleClient as the chart's orchestrator has it: its ServiceAccount's token and the chart's Role."""
    rbac = subprocess.run(
        [
            str(ROOT / "bin" / "helm"),
            "template",
            "sdc",
            str(ROOT / "charts" / "sdc"),
            "-n",
            namespace,
            "--show-only",
            "templates/orchestrator-rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubectl("create", "serviceaccount", "sdc-orchestrator", "-n", namespace)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=rbac)
    token = tmp_path / "token"
    token.write_text(kubectl("create", "token", "sdc-orchestrator", "-n", namespace).strip())
    config = json.loads(kubeconfig.read_text())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    return ScaleClient(config["clusters"][0]["cluster"]["server"], token, ca)


def write(client: ScaleClient, namespace: str, name: str, expected: int, replicas: int) -> str:
    async def once() -> str:
        try:
            return await client.set_replicas(namespace, name, expected, replicas)
        finally:
            await client.close()

    return asyncio.run(once())


def test_scale_subresource_from_kubectl_and_from_the_orchestrator(
    operator: OperatorProcess, kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(
        localllm(
            "zed",
            namespace,
            runtime="transformers",
            model="sdc/tiny",
            gpus=0,
            autoscaling={"minReplicas": 0, "maxReplicas": 3},
        )
    )
    wait_phase(kubectl, "zed", namespace, "Ready")

    # kubectl scale: the Deployment follows, status.replicas and status.selector are what /scale reads back.
    kubectl("scale", "llm", "zed", "-n", namespace, "--replicas=2")
    wait_until(
        "the Deployment to have 2 replicas",
        lambda: kubectl.get("deploy", "zed", "-n", namespace)["spec"]["replicas"] == 2,
    )
    llm = wait_until(
        "status.replicas 2",
        lambda: (o := kubectl.get("llm", "zed", "-n", namespace)).get("status", {}).get("readyReplicas") == 2 and o,
    )
    assert llm["status"]["replicas"] == 2
    scale = kubectl.get("llm", "zed", "-n", namespace, "--subresource=scale")
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["replicas"]) == ("Scale", 2, 2)
    assert scale["status"]["selector"] == "llm.sdc.dev/localllm=zed"
    pods = kubectl.get("pods", "-n", namespace, "-l", scale["status"]["selector"])["items"]
    assert len(pods) == 2

    # Past autoscaling.maxReplicas: the API server refuses the scale write itself (CEL).
    refused = kubectl("scale", "llm", "zed", "-n", namespace, "--replicas=4", check=False)
    assert "within autoscaling.minReplicas and autoscaling.maxReplicas" in refused

    # At zero by the user (a 0 written into the object keeps its manager): said so, and published under
    # `unready` (no baseUrl).
    kubectl("patch", "llm", "zed", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":0}}')
    zero = wait_until(
        "zed at zero, by the user",
        lambda: (
            (o := kubectl.get("llm", "zed", "-n", namespace)).get("status", {}).get("replicas") == 0
            and ready_reason(o) == "ZeroReplicas"
            and o
        ),
    )
    assert "set by kubectl-patch" in zero["status"]["message"]
    entry = wait_until(
        "zed published at zero",
        lambda: next((e for e in document(kubectl).get("unready", []) if e["name"] == f"{namespace}/zed"), None),
    )
    assert (entry["atZero"], entry["replicas"], "baseUrl" in entry) == (True, 0, False)
    assert entry["autoscaling"]["maxReplicas"] == 3

    # The orchestrator's write, with the chart's Role: 0 -> 1 once; the second ask changes nothing.
    client = orchestrator_client(kubectl, kubeconfig, namespace, tmp_path)
    assert write(client, namespace, "zed", 0, 1) == "scaled"
    assert write(client, namespace, "zed", 0, 1) == "already"
    wait_phase(kubectl, "zed", namespace, "Ready")
    wait_until(
        "zed published ready again",
        lambda: any(e["name"] == f"{namespace}/zed" for e in document(kubectl).get("endpoints", [])),
    )
    # The orchestrator's account may do nothing else: not patch the LocalLLM itself, not even read it.
    account = f"--as=system:serviceaccount:{namespace}:sdc-orchestrator"
    can = {
        what: kubectl("auth", "can-i", *what.split(), "-n", namespace, account, check=False).strip()
        for what in ("patch localllms --subresource=scale", "patch localllms", "get localllms", "get pods")
    }
    assert can == {
        "patch localllms --subresource=scale": "yes",
        "patch localllms": "no",
        "get localllms": "no",
        "get pods": "no",
    }

    # Scaled to zero through /scale, as the autoscaler does after idle: a 0 written there has no owner left
    # (a Scale omits replicas 0), and with minReplicas 0 the status says it was the scale to zero.
    assert write(client, namespace, "zed", 1, 0) == "scaled"
    idle = wait_until(
        "zed at zero, by the autoscaler",
        lambda: ready_reason(o := kubectl.get("llm", "zed", "-n", namespace)) == "ScaledToZero" and o,
    )
    assert "the autoscaler after" in idle["status"]["message"] and idle["status"]["replicas"] == 0


def test_requests_for_a_model_at_zero_are_held_and_served_through_the_real_api(
    operator: OperatorProcess, kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """The orchestrator (real HTTP server), the operator and the API server as deployed; only the engine's address
    is swapped: KWOK pods serve nothing, so a bridge copies the operator's document to the orchestrator's file
    with a fake engine on loopback in place of the pod's IP. A burst at zero: all answered, one scale write."""
    kubectl.apply(
        localllm(
            "wake", namespace, runtime="transformers", model="sdc/tiny", gpus=0, replicas=0,
            autoscaling={"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 600},
        )
    )  # fmt: skip
    wait_until(
        "wake published at zero",
        lambda: any(e["name"] == f"{namespace}/wake" and e["atZero"] for e in document(kubectl).get("unready", [])),
    )
    client = orchestrator_client(kubectl, kubeconfig, namespace, tmp_path)
    fake = FakeBackend("sdc/tiny", answer="깨어났습니다")
    local = tmp_path / "endpoints.json"
    stop = threading.Event()

    def bridge() -> None:
        while not stop.is_set():
            doc = document(kubectl)
            doc["endpoints"] = [
                {**e, "baseUrl": f"{engine}/v1", "metricsUrl": None}
                for e in doc.get("endpoints", [])
                if e["name"] == f"{namespace}/wake"
            ]
            doc["unready"] = [e for e in doc.get("unready", []) if e["name"] == f"{namespace}/wake"]
            local.write_text(json.dumps(doc))
            stop.wait(0.2)

    scaled = SCALE_WRITES.labels("up", "scaled")._value.get()
    with ExitStack() as stack:
        engine = stack.enter_context(serve(fake.app))
        worker = threading.Thread(target=bridge, daemon=True)
        worker.start()
        stack.callback(stop.set)
        wait_until("the bridge's first copy", local.exists)
        settings = OrchestratorSettings(
            sdc_endpoints_file=local,
            sdc_namespace=namespace,
            llm_service_type="none",
            llm_fallback="none",
            sdc_data_dir=tmp_path / "data",
            sdc_scale_api_url=client.api_url,
            sdc_scale_token_file=client.token_file,
            sdc_scale_ca_file=client.ca_file,
            sdc_hold_max_wait_s=90,
            sdc_hold_keepalive_s=1,
        )
        base = stack.enter_context(serve(create_app(settings)))
        started = time.monotonic()

        def ask(i: int) -> tuple[int, str]:
            body = {"model": "sdc/tiny", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "안녕"}]}
            with httpx.Client(timeout=120) as http:
                resp = http.post(f"{base}/v1/chat/completions", json=body)
            return resp.status_code, resp.text

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(ask, range(16)))
        elapsed = time.monotonic() - started
    print(f"\n16 requests from zero: all answered after {elapsed:.1f}s (KWOK pod, no model load)")
    assert [status for status, _ in results] == [200] * 16, results
    assert all("깨어났습니다" in text for _, text in results)
    assert SCALE_WRITES.labels("up", "scaled")._value.get() - scaled == 1
    assert kubectl.get("llm", "wake", "-n", namespace)["spec"]["replicas"] == 1
    assert fake.calls == 16
