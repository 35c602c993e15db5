"""The local control plane is a real cluster: controllers, scheduler, GC, volumes, CRD validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Kubectl, plain_deployment, refuse_foreign, simulated, wait_until

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod(name: str, namespace: str, gpus: int = 0, claim: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    spec: dict[str, Any] = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        spec["tolerations"] = [GPU_TOLERATION]
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    if not gpus:
        spec = simulated(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_nodes_advertise_gpus(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.get("nodes")["items"]}
    gpus = {name: n["status"]["allocatable"].get("nvidia.com/gpu") for name, n in nodes.items()}
    assert gpus["gpu-node-8x"] == "8"
    assert gpus["gpu-node-1x"] == "1"
    assert any(g is None for g in gpus.values()), "expected a CPU-only node"
    assert all(c["status"] == "True" for n in nodes.values() for c in n["status"]["conditions"] if c["type"] == "Ready")


def test_deployment_becomes_available(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(plain_deployment("web", namespace, "nginx", replicas=2))
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    dep = kubectl.get("deployment", "web", "-n", namespace)
    assert dep["status"]["availableReplicas"] == 2


def test_gpu_pod_lands_on_gpu_node(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(pod("two-gpus", namespace, gpus=2))
    placed = wait_until(
        "the pod to be Running",
        lambda: (p := kubectl.get("pod", "two-gpus", "-n", namespace))["status"].get("phase") == "Running" and p,
    )
    assert placed["spec"]["nodeName"] == "gpu-node-8x"


def test_too_many_gpus_stays_pending_with_reason(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(pod("greedy", namespace, gpus=16))

    def scheduling_event() -> str:
        events = kubectl.get("events", "-n", namespace, "--field-selector", "involvedObject.name=greedy")
        return next((e["message"] for e in events["items"] if e["reason"] == "FailedScheduling"), "")

    message = wait_until("a FailedScheduling event", scheduling_event)
    assert "Insufficient nvidia.com/gpu" in message
    assert kubectl.get("pod", "greedy", "-n", namespace)["status"]["phase"] == "Pending"


def test_deleting_owner_collects_children(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace)
    uid = kubectl.get("configmap", "owner", "-n", namespace)["metadata"]["uid"]
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "child",
                "namespace": namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
            },
        }
    )
    kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_until(
        "the child to be collected",
        lambda: "NotFound" in kubectl("get", "configmap", "child", "-n", namespace, check=False),
    )


def test_claim_binds_and_pod_runs(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "cache", "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
        }
    )
    kubectl.apply(pod("uses-cache", namespace, claim="cache"))
    wait_until(
        "the claim to bind", lambda: kubectl.get("pvc", "cache", "-n", namespace)["status"].get("phase") == "Bound"
    )
    wait_until(
        "the pod to run", lambda: kubectl.get("pod", "uses-cache", "-n", namespace)["status"].get("phase") == "Running"
    )


def test_crd_schema_violation_is_rejected(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    bad = {
        "apiVersion": "llm.sdc.dev/v1alpha1",
        "kind": "LocalLLM",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"runtime": "tensorrt", "model": {"name": "x/y"}},
    }
    out = kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert "spec.runtime" in out and "Unsupported value" in out, out


def test_kubeconfig_is_explicit(kubeconfig: Path, kubectl: Kubectl, tmp_path: Path, monkeypatch: Any) -> None:
    """The suite runs against the cluster it was given, or its own; never the ambient kube-context."""
    foreign = tmp_path / "foreign-kubeconfig"
    foreign.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod", "cluster": {"server": "https://10.20.30.40:6443"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "admin"}}],
                "users": [{"name": "admin", "user": {"token": "x"}}],
                "current-context": "prod",
            }
        )
    )
    with pytest.raises(AssertionError, match="not on this machine"):
        refuse_foreign(foreign)
    assert refuse_foreign(kubeconfig) == kubeconfig
    # An ambient KUBECONFIG naming a shared cluster changes nothing: every call names ours.
    monkeypatch.setenv("KUBECONFIG", str(foreign))
    server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    assert server.startswith(("https://127.0.0.1:", "https://localhost:", "https://[::1]:")), server
    assert kubectl("get", "--raw", "/readyz") == "ok"
