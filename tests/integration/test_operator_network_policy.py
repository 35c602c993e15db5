"""Engines outside the chart's namespaces get a NetworkPolicy from the operator, on a real API server.

The operator runs as a process with the values the chart would give it (SDC_ENGINE_NETWORK_POLICY: the
release in `sdc`, which the chart covers itself). A LocalLLM in another namespace gets its own policy,
created before its Deployment; a deleted or hand-edited policy is put back; a NetworkPolicy the operator
does not own (another of that name, any other) is never written or deleted; a policy no longer wanted (the
operator restarted with policies off) is deleted. Whether a node drops packets by these rules is
tests/integration/test_network_policy.py's subject (the real node); here the pods are simulated (KWOK).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, wait_phase

ENDPOINTS_NS = "sdc"
ORCHESTRATOR = {"app.kubernetes.io/name": "sdc-orchestrator", "app.kubernetes.io/instance": "sdc"}
HUB = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sdc"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "hub"}},
}
VALUES = {
    "orchestratorNamespace": ENDPOINTS_NS,
    "orchestratorLabels": ORCHESTRATOR,
    "ingressFrom": [],
    "chartNamespaces": [ENDPOINTS_NS],
    "egress": {"exceptCidrs": ["10.0.0.0/8", "169.254.0.0/16"], "dnsTo": [], "extraTo": [HUB]},
}


def start_operator(kubectl: Kubectl, kubeconfig: Path, log: Path, **env: str) -> OperatorProcess:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    kubectl("create", "namespace", ENDPOINTS_NS, check=False)
    proc = OperatorProcess(kubeconfig, ENDPOINTS_NS, log, **env)
    proc.start()
    return proc


@pytest.fixture
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = start_operator(kubectl, kubeconfig, tmp_path / "operator.log", SDC_ENGINE_NETWORK_POLICY=json.dumps(VALUES))
    yield proc
    proc.stop()
    print("\n--- operator log tail ---\n" + proc.tail())


def tiny(name: str, namespace: str) -> dict[str, Any]:
    return localllm(name, namespace, runtime="transformers", model="sdc/tiny", gpus=0)


def policy(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    out = kubectl("get", "networkpolicy", name, "-n", namespace, "-o", "json", "--ignore-not-found", check=False)
    return json.loads(out) if out.strip() else None


def test_a_localllm_outside_the_charts_namespaces_gets_its_own_policy(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(tiny("np", namespace))
    wait_phase(kubectl, "np", namespace, "Ready", timeout=120)
    llm = kubectl.get("llm", "np", "-n", namespace)
    made = policy(kubectl, "np", namespace)
    assert made is not None, "no NetworkPolicy for the engine"
    assert made["metadata"]["ownerReferences"][0]["uid"] == llm["metadata"]["uid"]
    spec = made["spec"]
    assert spec["podSelector"] == {"matchLabels": {"llm.sdc.dev/localllm": "np"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ENDPOINTS_NS}},
                    "podSelector": {"matchLabels": ORCHESTRATOR},
                }
            ],
            "ports": [{"port": 8000, "protocol": "TCP"}],
        }
    ]
    assert spec["egress"][-1] == {"to": [HUB]} and spec["egress"][0]["ports"][0]["port"] == 53
    # Created before the Deployment (the operator's log, in order): the engine never ran with its port open.
    applied = [
        line.split("applied ")[1].split(" ")[0] for line in operator.tail(400).splitlines() if "applied " in line
    ]
    assert applied.index("NetworkPolicy/np") < applied.index("Deployment/np"), applied

    # Deleted by hand: put back (a new object). Edited by hand: put back.
    kubectl("delete", "networkpolicy", "np", "-n", namespace)
    again = wait_until(
        "the policy to be put back",
        lambda: (p := policy(kubectl, "np", namespace)) and p["metadata"]["uid"] != made["metadata"]["uid"] and p,
        timeout=30,
    )
    opened = {"op": "add", "path": "/spec/ingress/0/from/-", "value": {"namespaceSelector": {}}}
    kubectl("patch", "networkpolicy", "np", "-n", namespace, "--type=json", "-p", json.dumps([opened]))

    def reverted() -> bool:
        current = policy(kubectl, "np", namespace)
        return current is not None and len(current["spec"]["ingress"][0]["from"]) == 1

    wait_until("the hand edit to be reverted", reverted, timeout=30)
    current = policy(kubectl, "np", namespace)
    assert current is not None and current["metadata"]["uid"] == again["metadata"]["uid"]


def test_policies_it_does_not_own_are_never_touched(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "taken", "namespace": namespace, "labels": {"llm.sdc.dev/localllm": "taken"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
    }
    bystander = {**foreign, "metadata": {"name": "team-default-deny", "namespace": namespace}}
    bystander = {**bystander, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    kubectl.apply([foreign, bystander])
    before = {n: policy(kubectl, n, namespace) for n in ("taken", "team-default-deny")}
    kubectl.apply(tiny("taken", namespace))
    status = wait_until(
        "a name conflict to be reported",
        lambda: (
            (s := kubectl.get("llm", "taken", "-n", namespace).get("status", {}))
            and "NetworkPolicy/taken" in s.get("message", "")
            and s
        ),
        timeout=60,
    )
    assert "NetworkPolicy/taken" in status["message"], status
    for name, obj in before.items():
        now = policy(kubectl, name, namespace)
        assert now is not None and obj is not None
        assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], f"{name} was written"
        assert not now["metadata"].get("ownerReferences"), name


def test_a_policy_no_longer_wanted_is_deleted(
    kubectl: Kubectl, kubeconfig: Path, tmp_path: Path, namespace: str
) -> None:
    first = start_operator(kubectl, kubeconfig, tmp_path / "a.log", SDC_ENGINE_NETWORK_POLICY=json.dumps(VALUES))
    try:
        kubectl.apply(tiny("unwanted", namespace))
        wait_until("its policy", lambda: policy(kubectl, "unwanted", namespace), timeout=60)
    finally:
        first.stop()
    # The release's values changed: this namespace is now the chart's (it renders the namespace-wide policy).
    covered = {**VALUES, "chartNamespaces": [ENDPOINTS_NS, namespace]}
    second = start_operator(kubectl, kubeconfig, tmp_path / "b.log", SDC_ENGINE_NETWORK_POLICY=json.dumps(covered))
    try:
        wait_until("the operator's policy to go", lambda: policy(kubectl, "unwanted", namespace) is None, timeout=60)
        assert kubectl.get("deployment", "unwanted", "-n", namespace)["metadata"]["name"] == "unwanted", (
            "the rest stays"
        )
        time.sleep(3)  # the deletion's own watch event arrives after the delete call returned
        log = (tmp_path / "b.log").read_text()
        # (a name of its own: the other tests' namespaces, deleted without waiting, log their teardown here)
        assert "NetworkPolicy unwanted was deleted" not in log, "the operator took its own prune for a hand deletion"
        assert policy(kubectl, "unwanted", namespace) is None, "and did not put the policy back"
    finally:
        second.stop()
        print("\n--- operator log tail ---\n" + second.tail())
