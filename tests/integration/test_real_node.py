"""End to end on the real node: the chart's pods, a Transformers and an Ollama LocalLLM run as real containers.

What KWOK hides and this proves: the images start, the operator in its pod
(in-cluster config, the chart's RBAC) builds pod specs that really run (init
container fetching from a hub inside the cluster, `sdc-runtime` serving,
Ready only through the real readiness probe, non-root), the orchestrator in
its pod answers from the endpoints the operator published, a deleted engine
pod is followed by status and replaced, `helm upgrade` with the same values
restarts nothing, and `helm uninstall` leaves only the kept CRD.

The images come from `hack/images.py` (built here, cached by content, loaded
into the node's containerd); the test reaches Services by their ClusterIP from
the host (routed into the node's namespace, kube-proxy's rules there).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hack import hub
from tests.conftest import Kubectl, wait_until
from tests.integration import real_node_setup
from tests.integration.operator_harness import GROUP_VERSION, REVISION
from tests.integration.real_node_setup import (
    CHART,
    api_key,
    chart_values,
    helm,
    open_to_hub,
    pods,
    ready,
    service_url,
    start_hub,
    try_chat,
    wait_llm_ready,
)
from tests.support import tiny_gguf

REAL_NODE = "sdc-real-node"
MODEL = "sdc/tiny"
SLOW_MODEL = "sdc/tiny-slow"  # served at 20 kB/s per download: its 400 kB of weights take about 20 s
GGUF_REPO = "sdc/tiny-gguf"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model's files and the hub's code, handed to a pod on the real node through a hostPath."""
    root = tmp_path_factory.mktemp("hub")
    gguf = root / "models" / GGUF_REPO / "model.gguf"
    gguf.parent.mkdir(parents=True)
    (root / "model.gguf.sha256").write_text(tiny_gguf.write(gguf))
    hub.prepare(root, {MODEL: 0, SLOW_MODEL: 1})
    return open_to_hub(root)


def ollama_llm(name: str, namespace: str, url: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "ollama",
            "model": {"name": "tiny:latest", "url": url, "sha256": sha256, "parameters": {"num_thread": "1"}},
            "resources": {"gpus": 0},
        },
    }


def transformers_llm(name: str, namespace: str, model: str = MODEL) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "transformers",
            "model": {"name": model, "revision": REVISION},
            "resources": {"gpus": 0},
        },
    }


@pytest.fixture
def release(kubectl: Kubectl, kubeconfig: Path) -> Iterator[tuple[str, str]]:
    yield from real_node_setup.release(kubectl, kubeconfig, f"e2e-{uuid.uuid4().hex[:6]}", "60s")


@pytest.mark.timeout(3600)  # a cold run builds the images first (see the `images` fixture)
def test_chart_and_models_on_real_pods(
    kubectl: Kubectl, kubeconfig: Path, real_node: str, images: None, hub_root: Path, release: tuple[str, str]
) -> None:
    name, ns = release
    values = chart_values(ns)
    gguf_sha = (hub_root / "model.gguf.sha256").read_text().strip()
    start_hub(kubectl, ns, hub_root, paced={SLOW_MODEL: 20_000})

    # 1. The chart with its defaults (plus where the hub is), with `--wait`: the orchestrator is Ready with no
    # model yet (it serves, and says so), so the install completes as Argo CD or Flux expect; `helm test`
    # then checks the release end to end with its generated key.
    started = time.monotonic()
    helm(kubeconfig, "install", name, str(CHART), "-n", ns, *values, "--take-ownership", "--wait", "--timeout", "5m")
    print(f"helm install --wait with the defaults: {time.monotonic() - started:.1f}s")
    release_pods = f"app.kubernetes.io/instance={name},app.kubernetes.io/name in (sdc-operator,sdc-orchestrator)"
    operator_pods = [p for p in pods(kubectl, ns, f"{release_pods},app.kubernetes.io/name=sdc-operator") if ready(p)]
    orchestrator_pods = pods(kubectl, ns, f"{release_pods},app.kubernetes.io/name=sdc-orchestrator")
    assert operator_pods and orchestrator_pods and all(ready(p) for p in orchestrator_pods), "Ready with no model"
    tested = helm(kubeconfig, "test", name, "-n", ns, "--logs", "--timeout", "3m")
    assert "chat: no model yet" in tested and "passed" in tested, tested
    kubectl("delete", "pod", "-n", ns, "-l", "app.kubernetes.io/name=sdc-check")  # kept for --logs; not needed now
    for pod in operator_pods + orchestrator_pods:
        assert pod["spec"]["nodeName"] == real_node, pod["metadata"]["name"]

    # 2. A Transformers LocalLLM: fetched from the in-cluster hub by the init container, served by sdc-runtime.
    started = time.monotonic()
    kubectl.apply(transformers_llm("tiny", ns))
    llm = wait_llm_ready(kubectl, "tiny", ns, timeout=300, interval=1)
    print(f"transformers LocalLLM: kubectl apply -> Ready in {time.monotonic() - started:.1f}s")
    (engine,) = [p for p in pods(kubectl, ns, "llm.sdc.dev/localllm=tiny") if ready(p)]
    assert engine["spec"]["nodeName"] == real_node
    assert engine["spec"]["securityContext"].get("runAsNonRoot") is True
    assert engine["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert llm["status"]["endpoint"]
    chart_pods = wait_until(
        "the chart's pods to be Ready",
        lambda: (ps := pods(kubectl, ns, release_pods)) and all(ready(p) for p in ps) and ps,
        timeout=120,
        interval=1,
    )
    print("\n" + kubectl("get", "pods", "-n", ns, "-o", "wide"))

    # 2b. A slow download shows its progress in the status (read from the download step's log), and the
    # figures leave the status when the download ends.
    kubectl.apply(transformers_llm("tiny-slow", ns, SLOW_MODEL))
    statuses: list[dict[str, Any]] = []

    def progress_shown() -> dict[str, Any] | None:
        statuses.append(kubectl.get("llm", "tiny-slow", "-n", ns).get("status", {}))
        return statuses[-1] if statuses[-1].get("download") else None

    try:
        seen = wait_until("download progress in the status", progress_shown, timeout=120, interval=0.5)
    except AssertionError:
        phases = [(s.get("phase"), s.get("message")) for s in statuses]
        print("statuses seen:", [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]])
        print(kubectl("logs", "-n", ns, "-l", "app.kubernetes.io/name=sdc-operator", "--tail=60", check=False))
        print(kubectl("logs", "-n", ns, "-l", "llm.sdc.dev/localllm=tiny-slow", "-c", "model-download", check=False))
        raise
    print(f"while downloading: {seen['message']}; {seen['download']}")
    assert seen["phase"] == "Downloading" and "% (" in seen["message"], seen
    progress = seen["download"]
    assert 0 <= progress["bytesDone"] < progress["bytesTotal"] and progress["filesTotal"] >= 2, progress
    done = wait_until(
        "the slow model to be Ready",
        lambda: (st := kubectl.get("llm", "tiny-slow", "-n", ns).get("status", {})).get("phase") == "Ready" and st,
        timeout=300,
        interval=1,
    )
    assert "download" not in done, done
    kubectl("delete", "llm", "tiny-slow", "-n", ns, "--timeout=120s")

    # 3. The in-cluster orchestrator answers through the endpoint the operator published.
    fullname = name if "sdc" in name else f"{name}-sdc"  # the chart's sdc.fullname
    base = service_url(kubectl, ns, f"{fullname}-orchestrator")
    key = api_key(kubectl, ns, fullname)
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401, "the chart turns API keys on"
    answer = wait_until("a chat answer", lambda: try_chat(base, "transformers", key), timeout=120, interval=2)
    assert answer["provider"] == "transformers" and not answer["fallback_used"], answer
    models = httpx.get(f"{base}/v1/models", headers=auth, timeout=30).json()
    served = [m["id"] for m in models["data"]]
    assert served, models
    completion = httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": served[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        headers=auth,
        timeout=60,
    )
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["message"]["role"] == "assistant"

    # 3b. An Ollama LocalLLM on the real node: the GGUF comes from the in-cluster hub (model.url, checked
    # against model.sha256), is imported under model.name, and `ollama serve` (built here) serves it.
    started = time.monotonic()
    kubectl.apply(ollama_llm("tiny-ollama", ns, f"{hub.url(ns)}/{GGUF_REPO}/resolve/{REVISION}/model.gguf", gguf_sha))
    wait_until(
        "the Ollama LocalLLM to be Ready",
        lambda: kubectl.get("llm", "tiny-ollama", "-n", ns).get("status", {}).get("phase") == "Ready",
        timeout=300,
        interval=1,
    )
    print(f"ollama LocalLLM: kubectl apply -> Ready in {time.monotonic() - started:.1f}s")
    (ollama_pod,) = [p for p in pods(kubectl, ns, "llm.sdc.dev/localllm=tiny-ollama") if ready(p)]
    assert ollama_pod["spec"]["nodeName"] == real_node
    answer = wait_until("an answer from ollama", lambda: try_chat(base, "ollama", key), timeout=120, interval=2)
    assert answer["provider"] == "ollama" and not answer["fallback_used"], answer
    kubectl("delete", "llm", "tiny-ollama", "-n", ns, "--timeout=120s")

    # 4. The engine pod deleted: status follows, a replacement becomes Ready, requests recover.
    before = {p["metadata"]["uid"] for p in chart_pods}
    kubectl("delete", "pod", engine["metadata"]["name"], "-n", ns, "--wait=false")
    wait_until(
        "the LocalLLM to leave Ready",
        lambda: kubectl.get("llm", "tiny", "-n", ns).get("status", {}).get("phase") != "Ready",
        timeout=60,
        interval=0.2,
    )
    wait_until(
        "the LocalLLM to be Ready again",
        lambda: kubectl.get("llm", "tiny", "-n", ns).get("status", {}).get("phase") == "Ready",
        timeout=300,
        interval=1,
    )
    replacement = [p for p in pods(kubectl, ns, "llm.sdc.dev/localllm=tiny") if ready(p)]
    assert replacement and replacement[0]["metadata"]["uid"] != engine["metadata"]["uid"]
    assert wait_until("requests to recover", lambda: try_chat(base, "transformers", key), timeout=120, interval=2)

    # 5. helm upgrade with unchanged values restarts no pod.
    helm(kubeconfig, "upgrade", name, str(CHART), "-n", ns, *values, "--wait", "--timeout", "3m")
    after = {p["metadata"]["uid"] for p in pods(kubectl, ns, release_pods) if ready(p)}
    assert after == before, "helm upgrade with the same values restarted pods"

    # 6. helm uninstall leaves nothing but the kept CRD.
    kubectl("delete", "llm", "--all", "-n", ns, "--timeout=120s")
    helm(kubeconfig, "uninstall", name, "-n", ns, "--wait", "--timeout", "2m")
    selector = f"app.kubernetes.io/instance={name}"
    wait_until(
        "the release's objects to be gone",
        lambda: (
            kubectl(
                "get", "all,cm,secret,sa,role,rolebinding,networkpolicy,pdb", "-n", ns, "-l", selector, "-o", "name"
            )
            == ""
        ),
        timeout=120,
    )
    assert kubectl("get", "clusterrole,clusterrolebinding", "-l", selector, "-o", "name") == ""
    assert kubectl.get("crd", "localllms.llm.sdc.dev")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The documents' claim is kept too (helm.sh/resource-policy: keep): a reinstall finds them.
    kept = kubectl("get", "pvc", "-n", ns, "-l", selector, "-o", "name").strip()
    assert kept == f"persistentvolumeclaim/{fullname}-orchestrator-data", kept
    kubectl("delete", "pvc", "-n", ns, "-l", selector, "--wait=false")
