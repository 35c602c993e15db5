"""The operator's migration aids on the real API server: the GPU fit check on the 1-GPU KWOK node
(an NVIDIA-L4), models served from a volume without a download, and quantization refused per runtime."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, wait_phase

ENDPOINTS_NS = "sdc"
L4 = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    kubectl("create", "namespace", ENDPOINTS_NS, check=False)
    proc = OperatorProcess(kubeconfig, ENDPOINTS_NS, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    print("\n--- operator log tail ---\n" + proc.tail())


def condition(kubectl: Kubectl, name: str, namespace: str, kind: str) -> dict[str, str] | None:
    obj = kubectl.get("llm", name, "-n", namespace)
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), None)


def test_a_model_too_large_for_the_l4_says_so(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        [
            # scaled to zero: the warning shows until a model is Ready (then it evidently fits), and a KWOK pod
            # can be Ready before the first status write; at zero replicas the phase stays Pending for sure
            localllm("llama70b", namespace, model="meta-llama/Llama-3.1-70B-Instruct", scheduling=L4, replicas=0),
            localllm("gemma9b", namespace, scheduling=L4),
        ]
    )
    fits = wait_until("the Fits condition", lambda: condition(kubectl, "llama70b", namespace, "Fits"), timeout=60)
    assert (fits["status"], fits["reason"]) == ("False", "TooLarge"), fits
    assert "needs ~156 GiB" in fits["message"] and "1 x NVIDIA-L4 has 22 GiB" in fits["message"], fits
    status = kubectl.get("llm", "llama70b", "-n", namespace)["status"]
    assert status["message"].startswith("may not fit: needs ~156 GiB"), status
    assert status["message"].endswith("at zero: spec.replicas is 0 (set by kubectl-client-side-apply)"), status
    good = wait_until("gemma9b's Fits", lambda: condition(kubectl, "gemma9b", namespace, "Fits"))
    assert good["status"] == "True" and "needs ~20 GiB" in good["message"]
    table = kubectl("get", "llm", "-n", namespace)
    header, *rows = table.splitlines()
    assert "FITS" in header.split()
    column = header.split().index("FITS")
    by_name = {row.split()[0]: row.split()[column] for row in rows}
    assert by_name == {"gemma9b": "True", "llama70b": "False"}, table
    # a warning, not a gate: the pods still target the L4 node
    pods = wait_until(
        "gemma9b's pod", lambda: kubectl.get("pods", "-n", namespace, "-l", "llm.sdc.dev/localllm=gemma9b")["items"]
    )
    assert all(p["spec"].get("nodeSelector", {}).get("nvidia.com/gpu.product") == "NVIDIA-L4" for p in pods)


def test_a_model_from_a_volume_skips_the_download(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            # Opened to LocalLLMs by its owner (policy.ALLOW_LABEL): an unlabelled claim is never mounted.
            "metadata": {"name": "finetuned", "namespace": namespace, "labels": {"llm.sdc.dev/allow-localllm": "true"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    )
    llm = localllm("ft", namespace, model="sdc/gemma-2-9b-ko-ft")
    del llm["spec"]["model"]["revision"]  # a model on a volume needs no pinned hub revision
    llm["spec"]["model"]["source"] = {"claimName": "finetuned", "path": "gemma-ko/v3"}
    kubectl.apply(llm)
    ready = wait_phase(kubectl, "ft", namespace, "Ready")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in ready["status"]["conditions"]}
    assert conditions["CacheBound"] == ("True", "ExistingClaim")
    pod = kubectl.get("deploy", "ft", "-n", namespace)["spec"]["template"]["spec"]
    assert pod.get("initContainers", []) == [], "no download step"
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "finetuned", "readOnly": True}
    assert pod["containers"][0]["args"][0] == "/models/gemma-ko/v3", "vllm serve's positional model"
    claims = [c["metadata"]["name"] for c in kubectl.get("pvc", "-n", namespace)["items"]]
    assert claims == ["finetuned"], "the operator made no cache claim of its own"


@pytest.mark.parametrize(
    ("case", "runtime", "model", "quant", "fragment"),
    [
        ("int4 on vllm", "vllm", "google/gemma-2-9b-it", "int4", "engine.quantization for vllm must be one of"),
        ("awq on transformers", "transformers", "google/gemma-2-9b-it", "awq", "for transformers must be one of"),
        ("tag without the suffix", "ollama", "gemma2:9b", "q8_0", "must end in -<quantization>"),
        ("unknown format", "vllm", "google/gemma-2-9b-it", "int3", "Unsupported value"),
    ],
)
def test_quantization_is_validated_per_runtime_by_the_api_server(
    kubectl: Kubectl, namespace: str, case: str, runtime: str, model: str, quant: str, fragment: str
) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
    body = localllm("q", namespace, runtime=runtime, model=model, engine={"quantization": quant})
    out = kubectl("apply", "-f", "-", stdin=json.dumps(body), check=False)
    assert fragment in out, (case, out)
    assert "created" not in out, (case, out)
