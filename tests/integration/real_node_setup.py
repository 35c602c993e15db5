"""What the real-node tests share: the chart release, the in-cluster hub, the pods they wait for, the chat they send.

test_real_node.py (Transformers and Ollama) and test_real_node_vllm.py (vLLM on CPU) set up the same way: a
namespace of their own with a model hub in it, the chart installed with the hub as the operator's
HF_ENDPOINT and the chat API opened to this machine (the node's link), and the release removed afterwards
whatever happened.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hack import hub
from hack.node import NODE_LINKS_CIDR
from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import REVISION

CHART = ROOT / "charts" / "sdc"
HELM = str(ROOT / "bin" / "helm")
RUNTIME_IMAGE = "ghcr.io/sdc-llm/sdc-runtime:0.1.0"  # the hub runs in it (fastapi and uvicorn)


def helm(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run([HELM, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def release(kubectl: Kubectl, kubeconfig: Path, name: str, delete_timeout: str) -> Iterator[tuple[str, str]]:
    """A release and its namespace, both `name`; for a fixture: `yield from release(...)`."""
    yield name, name
    # Whatever happened: no release, no LocalLLMs, no namespace left behind.
    kubectl("delete", "llm", "--all", "-n", name, "--wait=true", f"--timeout={delete_timeout}", check=False)
    subprocess.run([HELM, f"--kubeconfig={kubeconfig}", "uninstall", name, "-n", name], capture_output=True)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def open_to_hub(root: Path) -> Path:
    """Let the hub (uid 1000, through a hostPath) walk from /tmp to its files."""
    for parent in root.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    return root


def chart_values(namespace: str) -> list[str]:
    """The chart's defaults plus where the hub is; the chat API admits, beside the release's own pods, this
    machine (the node enforces NetworkPolicies and the tests call the chat API from the node's link)."""
    host = [{"podSelector": {}}, {"ipBlock": {"cidr": NODE_LINKS_CIDR}}]
    return [
        *hub.chart_values(namespace),  # HF_ENDPOINT, and the engines' egress policy opened to the in-cluster hub
        "--set-json",
        f"networkPolicy.chatIngressFrom={json.dumps(host)}",
    ]


def start_hub(kubectl: Kubectl, namespace: str, root: Path, paced: dict[str, int] | None = None) -> None:
    """The release's namespace, and the hub serving `root/models` in it (Ready is waited for by the pods using it);
    `paced` repositories slowly (bytes per second per download)."""
    kubectl("create", "namespace", namespace)
    kubectl.apply(hub.objects(namespace, root, RUNTIME_IMAGE, REVISION, paced=paced))


def pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    return list(kubectl.get("pods", "-n", namespace, "-l", selector)["items"])


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def wait_llm_ready(kubectl: Kubectl, name: str, namespace: str, timeout: float, interval: float) -> dict[str, Any]:
    """The LocalLLM once its phase is Ready."""
    llm: dict[str, Any] = wait_until(
        f"the LocalLLM {name} to be Ready",
        lambda: (o := kubectl.get("llm", name, "-n", namespace)).get("status", {}).get("phase") == "Ready" and o,
        timeout=timeout,
        interval=interval,
    )
    return llm


def service_url(kubectl: Kubectl, namespace: str, name: str) -> str:
    svc = kubectl.get("service", name, "-n", namespace)
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def api_key(kubectl: Kubectl, namespace: str, fullname: str) -> str:
    """The admin key the chart generated: the chat routes answer 401 without one."""
    encoded = kubectl("get", "secret", f"{fullname}-api-keys", "-n", namespace, "-o", "jsonpath={.data.keys}")
    return base64.b64decode(encoded).decode().splitlines()[0].split(":", 1)[1]


def chat(base: str, provider: str, key: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/v1/chat",
        json={"message": "안녕하세요", "provider": provider, "max_tokens": 8, "use_rag": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def try_chat(base: str, provider: str, key: str) -> dict[str, Any] | None:
    try:
        return chat(base, provider, key)
    except (httpx.HTTPError, AssertionError, json.JSONDecodeError):
        return None
