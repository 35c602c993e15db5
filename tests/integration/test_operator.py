"""The operator driven as a user drives it: kubectl apply, get, edit, delete."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sdc_operator.policy import ALLOW_LABEL

from tests.conftest import ROOT, SIMULATED_NODE_SELECTOR, SIMULATED_TOLERATION, Kubectl, globbed, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, running_operator, wait_phase
from tests.support.metrics import scrape

ENDPOINTS_NS = "sdc"


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # The tests make LocalLLMs in namespaces of their own: publish them all (by default only ENDPOINTS_NS).
    log_dir = tmp_path_factory.mktemp("operator")
    yield from running_operator(kubectl, kubeconfig, log_dir, ENDPOINTS_NS, SDC_PUBLISH_NAMESPACES='["*"]')


def published(kubectl: Kubectl) -> list[dict[str, object]]:
    out = kubectl("get", "configmap", "sdc-endpoints", "-n", ENDPOINTS_NS, "-o", "json", check=False)
    if not out.startswith("{"):
        return []
    return list(json.loads(json.loads(out)["data"]["endpoints.json"])["endpoints"])


def test_create_to_ready_with_gpus_endpoint_and_publication(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    started = time.monotonic()
    kubectl.apply(localllm("gemma", namespace, gpus=2, routing={"weight": 90}))
    wait_until(
        "the Deployment",
        lambda: kubectl("get", "deploy", "gemma", "-n", namespace, "-o", "json", check=False).startswith("{"),
    )
    created_after = time.monotonic() - started
    deployment = kubectl.get("deploy", "gemma", "-n", namespace)
    # The LocalLLM's own child: garbage-collected with it, watched back by the operator.
    llm_uid = kubectl.get("llm", "gemma", "-n", namespace)["metadata"]["uid"]
    owners = [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in deployment["metadata"]["ownerReferences"]]
    assert owners == [("LocalLLM", "gemma", llm_uid, True)]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size" in container["args"]
    ready = wait_phase(kubectl, "gemma", namespace, "Ready")
    ready_after = time.monotonic() - started
    print(f"\none LocalLLM: Deployment after {created_after:.2f}s, Ready after {ready_after:.2f}s")
    assert ready["status"]["endpoint"] == f"http://gemma.{namespace}.svc.cluster.local:8000/v1"
    assert ready["status"]["readyReplicas"] == 1
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    conditions = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    assert conditions == {
        "SpecValid": "True",
        "Fits": "Unknown",  # no GPU product selected: nothing to compare the model with
        "CacheBound": "True",
        "Scheduled": "True",
        "ModelCached": "True",
        "Available": "True",
        "Ready": "True",
    }
    pod = kubectl.get("pods", "-n", namespace, "-l", "llm.sdc.dev/localllm=gemma")["items"][0]
    assert pod["spec"]["nodeName"] == "gpu-node-8x"
    table = kubectl("get", "llm", "-n", namespace)
    assert "Ready" in table and "google/gemma-2-9b-it" in table
    entry = wait_until(
        "the endpoint to be published",
        lambda: next((e for e in published(kubectl) if e["name"] == f"{namespace}/gemma"), None),
    )
    assert entry["weight"] == 90 and entry["model"] == "google/gemma-2-9b-it" and entry["role"] == "chat"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=LocalLLM")
    assert "Ready" in events


def test_spec_update_rolls_the_deployment(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(localllm("roll", namespace, runtime="transformers", model="sdc/tiny", gpus=0))
    wait_phase(kubectl, "roll", namespace, "Ready")
    before = kubectl.get("deploy", "roll", "-n", namespace)["metadata"]["generation"]
    kubectl(
        "patch",
        "llm",
        "roll",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"engine": {"args": ["--max-batch=4"]}}}),
    )
    wait_until(
        "the Deployment to change",
        lambda: kubectl.get("deploy", "roll", "-n", namespace)["metadata"]["generation"] > before,
    )
    args = kubectl.get("deploy", "roll", "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-batch=4" in args
    wait_until(
        "the new generation to be Ready",
        lambda: (
            (o := kubectl.get("llm", "roll", "-n", namespace))["status"].get("observedGeneration")
            == o["metadata"]["generation"]
            and o["status"]["phase"] == "Ready"
        ),
    )


def test_more_gpus_than_any_node_is_reported(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(localllm("huge", namespace, gpus=16))
    status = wait_until(
        "a scheduling message",
        lambda: (
            "Insufficient nvidia.com/gpu"
            in (o := kubectl.get("llm", "huge", "-n", namespace)).get("status", {}).get("message", "")
            and o["status"]
        ),
    )
    assert status["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in kubectl("get", "llm", "huge", "-n", namespace, "-o", "wide")
    assert "Insufficient nvidia.com/gpu" in kubectl("describe", "llm", "huge", "-n", namespace)


def test_schema_and_cel_refuse_bad_specs(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    no_revision = localllm("norev", namespace)
    del no_revision["spec"]["model"]["revision"]
    out = kubectl("apply", "-f", "-", stdin=json.dumps(no_revision), check=False)
    assert "spec.model.revision" in out and "pinned" in out, out
    bad_tag = localllm("badtag", namespace, runtime="ollama", model="Not A Tag!", gpus=0)
    out = kubectl("apply", "-f", "-", stdin=json.dumps(bad_tag), check=False)
    assert "spec.model.name" in out and "Ollama tag" in out, out
    negative = localllm("neg", namespace, gpus=-1)
    out = kubectl("apply", "-f", "-", stdin=json.dumps(negative), check=False)
    assert "spec.resources.gpus" in out, out
    refused = [
        # bitsandbytes is CUDA-only: int8/int4 on CPU would crash-loop at load.
        (
            localllm("cpuint8", namespace, runtime="transformers", gpus=0, engine={"quantization": "int8"}),
            "spec.engine.quantization",
            "needs a GPU",
        ),
        # vLLM on CPU runs its CPU image, whose kernels load AWQ and GPTQ only.
        (
            localllm("cpuvllm", namespace, gpus=0, engine={"quantization": "fp8"}),
            "spec.engine.quantization",
            "vllm on CPU",
        ),
        (
            localllm("ollargs", namespace, runtime="ollama", model="a:b", gpus=0, engine={"args": ["-v"]}),
            "spec.engine.args",
            "takes no arguments",
        ),
    ]
    spaced = localllm("spaced", namespace, runtime="ollama", model="a:b", gpus=0)
    spaced["spec"]["model"]["servedName"] = "my model"
    refused.append((spaced, "spec.model.servedName", "Ollama model name"))
    nohash = localllm("nohash", namespace, runtime="ollama", model="a:b", gpus=0)
    nohash["spec"]["model"]["url"] = "http://files.sdc.svc/a.gguf"
    refused.append((nohash, "spec.model.sha256", "go together"))
    for body, field, words in refused:
        out = kubectl("apply", "-f", "-", stdin=json.dumps(body), check=False)
        assert field in out and words in out, out


def test_invalid_spec_fails_then_recovers(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    # What CEL cannot judge (the installation's image allow-list) fails at the operator, nothing built.
    kubectl.apply(localllm("three", namespace, engine={"image": "registry.example/not-allowed:1"}))
    failed = wait_phase(kubectl, "three", namespace, "Failed")
    assert "'registry.example/not-allowed:1' is not an allowed image" in failed["status"]["message"]
    assert "NotFound" in kubectl("get", "deploy", "three", "-n", namespace, check=False)
    kubectl("patch", "llm", "three", "-n", namespace, "--type=merge", "-p", '{"spec":{"engine":{"image":null}}}')
    wait_phase(kubectl, "three", namespace, "Ready")


def test_delete_leaves_nothing_owned(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(localllm("gone", namespace, runtime="ollama", model="gemma2:9b", gpus=0))
    wait_phase(kubectl, "gone", namespace, "Ready")
    kubectl("delete", "llm", "gone", "-n", namespace)
    wait_until(
        "children to be collected",
        lambda: (
            kubectl("get", "deploy,svc,pvc,pods", "-n", namespace, "-l", "llm.sdc.dev/localllm=gone", "-o", "name")
            == ""
        ),
    )
    wait_until(
        "the endpoint to be withdrawn", lambda: all(e["name"] != f"{namespace}/gone" for e in published(kubectl))
    )


def test_sigkill_mid_reconcile_converges(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    names = [f"m{i}" for i in range(30)]
    started = time.monotonic()
    kubectl.apply([localllm(n, namespace, runtime="transformers", model="sdc/tiny", gpus=0) for n in names])

    def deployment_applied() -> bool:
        return any(
            "applied Deployment/" in line and f"for {namespace}/" in line for line in operator.tail(200).splitlines()
        )

    wait_until("the first Deployment applied", deployment_applied, interval=0.01)
    operator.kill()
    # Proof the kill landed mid-reconcile: some children existed, not all of them.
    at_kill = len(kubectl("get", "deploy", "-n", namespace, "-o", "name").split())
    assert 0 < at_kill < len(names), f"the kill must land while reconciling (had {at_kill}/{len(names)})"
    operator.start()
    for n in names:
        wait_phase(kubectl, n, namespace, "Ready", timeout=120)
    print(
        f"\n{len(names)} LocalLLMs (SIGKILL with {at_kill} Deployments made): "
        f"all Ready after {time.monotonic() - started:.2f}s"
    )
    for kind in ("deploy", "svc", "pvc"):
        owners = [o["metadata"]["labels"]["llm.sdc.dev/localllm"] for o in kubectl.get(kind, "-n", namespace)["items"]]
        assert sorted(owners) == sorted(names), kind


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_metrics_and_liveness(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    import httpx

    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    wait_until("the metrics endpoint", lambda: _up(url))
    before = {
        "ok": scrape(url, "sdc_operator_reconciles_total", result="ok"),
        "ready": scrape(url, "sdc_operator_models", phase="Ready"),
        "applies": scrape(url, "sdc_operator_applies_total", kind="Deployment"),
        "writes": scrape(url, "sdc_operator_status_writes_total"),
    }
    kubectl.apply(localllm("observed", namespace, runtime="ollama", model="gemma2:9b", gpus=0))
    wait_phase(kubectl, "observed", namespace, "Ready")
    wait_until(
        "the Ready gauge to count it", lambda: scrape(url, "sdc_operator_models", phase="Ready") > before["ready"]
    )
    after = {
        "ok": scrape(url, "sdc_operator_reconciles_total", result="ok"),
        "ready": scrape(url, "sdc_operator_models", phase="Ready"),
        "applies": scrape(url, "sdc_operator_applies_total", kind="Deployment"),
        "writes": scrape(url, "sdc_operator_status_writes_total"),
    }
    delta = {k: after[k] - before[k] for k in before}
    assert delta["ok"] >= 1 and delta["ready"] == 1 and delta["applies"] == 1, delta
    assert 1 <= delta["writes"] <= 12, f"status writes are coalesced: {delta}"
    assert httpx.get(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5).status_code == 200


def test_manifest_examples_become_ready(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    manifests = globbed(ROOT / "manifests", "*.yaml")
    # The gated examples name a token Secret, usable only when its owner labels it for LocalLLMs (the deputy rule).
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf-token", "namespace": namespace, "labels": {ALLOW_LABEL: "true"}},
            "stringData": {"token": "hf_not_a_real_token"},
        }
    )
    for path in manifests:
        example = yaml.safe_load(path.read_text())
        if not example["spec"].get("resources", {}).get("gpus"):  # CPU examples: KWOK plays the engine
            example["spec"]["scheduling"] = {
                "nodeSelector": SIMULATED_NODE_SELECTOR,
                "tolerations": [SIMULATED_TOLERATION],
            }
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(example))
    names = [n.split("/")[-1] for n in kubectl("get", "llm", "-n", namespace, "-o", "name").split()]
    assert len(names) == len(manifests)
    for name in names:
        wait_phase(kubectl, name, namespace, "Ready", timeout=120)
    table = kubectl("get", "llm", "-n", namespace, "-o", "wide")
    print("\n" + table)
    assert table.count("Ready") >= len(manifests)
