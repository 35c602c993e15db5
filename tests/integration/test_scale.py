"""The /scale subresource on a real API server: kubectl scale, the CEL bounds, why a model is at zero, and the
orchestrator's one write (its ScaleClient, with the chart's own Role: patch on localllms/scale, nothing more)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdc_orchestrator.scaling.client import ScaleClient

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, wait_phase

ENDPOINTS_NS = "sdc"


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    kubectl("create", "namespace", ENDPOINTS_NS, check=False)
    proc = OperatorProcess(
        kubeconfig, ENDPOINTS_NS, tmp_path_factory.mktemp("operator") / "operator.log", SDC_PUBLISH_NAMESPACES='["*"]'
    )
    proc.start()
    yield proc
    proc.stop()
    print("\n--- operator log tail ---\n" + proc.tail())


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
