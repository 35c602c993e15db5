"""The engines' own NetworkPolicy (builders/network_policy.py) and its pruning (plan.stale_children): tables.

The operator makes one per LocalLLM outside the namespaces whose policy the chart renders; the chart's
rendering of the same values is tested in tests/chart/test_chart_render.py (and compared with this builder
there), the objects on a real API server in tests/integration/test_operator_network_policy.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from sdc_operator.builders.common import SPEC_HASH, LocalLLM
from sdc_operator.builders.network_policy import network_policy
from sdc_operator.builders.workload import desired_children, engine_port
from sdc_operator.engine_network import PRIVATE_CIDRS, EngineEgress, EngineNetworkPolicy, egress_rules
from sdc_operator.plan import manually_deleted, stale_children
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec

REV = "a" * 40
ORCHESTRATOR = {"app.kubernetes.io/name": "sdc-orchestrator", "app.kubernetes.io/instance": "sdc"}
BASE = EngineNetworkPolicy(orchestrator_namespace="sdc", orchestrator_labels=ORCHESTRATOR, chart_namespaces=["sdc"])
HUB = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sdc"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "hub"}},
}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
SPECS = {
    "vllm": {"runtime": "vllm", "model": {"name": "google/gemma-2-9b-it", "revision": REV}},
    "ollama": {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
    "transformers": {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}},
}


def make(runtime: str = "vllm", namespace: str = "team-a", name: str = "m") -> LocalLLM:
    return LocalLLM(name, namespace, "uid-1", 1, LocalLLMSpec.model_validate(SPECS[runtime]))


def orchestrator_peer(namespace: str = "sdc") -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": ORCHESTRATOR},
    }


@pytest.mark.parametrize(
    ("case", "llm", "config", "want"),
    [
        ("no values (outside the chart): no policy", make(), None, None),
        ("the chart's namespace: the chart's policy covers it", make(namespace="sdc"), BASE, None),
        (
            "a served namespace besides the release's: the chart's too",
            make(namespace="team-b"),
            BASE.model_copy(update={"chart_namespaces": ["sdc", "team-b"]}),
            None,
        ),
        (
            "vllm elsewhere: its port, from the release's orchestrator only",
            make(),
            BASE,
            {"policyTypes": ["Ingress"], "from": [orchestrator_peer()], "port": 8000, "egress": None},
        ),
        (
            "ollama elsewhere: its API port (the admin routes included) from the orchestrator only",
            make("ollama"),
            BASE,
            {"policyTypes": ["Ingress"], "from": [orchestrator_peer()], "port": 11434, "egress": None},
        ),
        (
            "transformers elsewhere",
            make("transformers"),
            BASE,
            {"policyTypes": ["Ingress"], "from": [orchestrator_peer()], "port": 8000, "egress": None},
        ),
        (
            "another release namespace's orchestrator",
            make(),
            BASE.model_copy(update={"orchestrator_namespace": "llm-prod"}),
            {"policyTypes": ["Ingress"], "from": [orchestrator_peer("llm-prod")], "port": 8000, "egress": None},
        ),
        (
            "engineIngressFrom: more peers, the same one port",
            make(),
            BASE.model_copy(update={"ingress_from": [MONITORING]}),
            {"policyTypes": ["Ingress"], "from": [orchestrator_peer(), MONITORING], "port": 8000, "egress": None},
        ),
        (
            "egress on: DNS, HTTPS outside private ranges",
            make(),
            BASE.model_copy(update={"egress": EngineEgress()}),
            {
                "policyTypes": ["Ingress", "Egress"],
                "from": [orchestrator_peer()],
                "port": 8000,
                "egress": egress_rules(EngineEgress()),
            },
        ),
        (
            "egress with an in-cluster hub",
            make(),
            BASE.model_copy(update={"egress": EngineEgress(extra_to=[HUB])}),
            {
                "policyTypes": ["Ingress", "Egress"],
                "from": [orchestrator_peer()],
                "port": 8000,
                "egress": egress_rules(EngineEgress(extra_to=[HUB])),
            },
        ),
    ],
)
def test_network_policy(case: str, llm: LocalLLM, config: EngineNetworkPolicy | None, want: Any) -> None:
    port = engine_port(llm.spec.runtime)
    policy = network_policy(llm, port, config)
    if want is None:
        assert policy is None, case
        return
    assert policy is not None
    meta = policy["metadata"]
    assert (meta["name"], meta["namespace"]) == (llm.name, llm.namespace), case
    assert meta["ownerReferences"][0]["uid"] == llm.uid and meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["llm.sdc.dev/localllm"] == llm.name  # the operator's watch selects it
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"llm.sdc.dev/localllm": llm.name}}, case
    assert spec["policyTypes"] == want["policyTypes"], case
    [rule] = spec["ingress"]
    assert rule["from"] == want["from"], case
    assert rule["ports"] == [{"port": want["port"], "protocol": "TCP"}], case
    assert spec.get("egress") == want["egress"], case


@pytest.mark.parametrize(
    ("case", "egress", "want"),
    [
        (
            "defaults: DNS anywhere on port 53, HTTPS to public addresses",
            EngineEgress(),
            [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_CIDRS)}}],
                    "ports": [{"port": 443, "protocol": "TCP"}],
                },
            ],
        ),
        (
            "DNS narrowed to the cluster's DNS pods, a hub peer on any port",
            EngineEgress(
                dns_to=[{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                extra_to=[HUB],
            ),
            [
                {
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_CIDRS)}}],
                    "ports": [{"port": 443, "protocol": "TCP"}],
                },
                {"to": [HUB]},
            ],
        ),
        (
            "a proxy by address instead of the public hub",
            EngineEgress(except_cidrs=["0.0.0.0/0"], extra_to=[{"ipBlock": {"cidr": "10.1.2.3/32"}}]),
            [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/0"]}}],
                    "ports": [{"port": 443, "protocol": "TCP"}],
                },
                {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]},
            ],
        ),
    ],
)
def test_egress_rules(case: str, egress: EngineEgress, want: list[dict[str, Any]]) -> None:
    assert egress_rules(egress) == want, case
    assert "169.254.0.0/16" in PRIVATE_CIDRS  # cloud metadata stays out of the HTTPS rule


def test_the_chart_json_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart writes camelCase JSON (its values' spelling); unknown keys are an error, not ignored."""
    monkeypatch.setenv(
        "SDC_ENGINE_NETWORK_POLICY",
        '{"orchestratorNamespace": "sdc", "orchestratorLabels": {"a": "b"}, "ingressFrom": [], '
        '"chartNamespaces": ["sdc"], "egress": {"exceptCidrs": ["10.0.0.0/8"], "dnsTo": [], "extraTo": []}}',
    )
    config = OperatorSettings().engine_network_policy
    assert config is not None and config.chart_namespaces == ["sdc"]
    assert config.egress == EngineEgress(except_cidrs=["10.0.0.0/8"])
    monkeypatch.setenv(
        "SDC_ENGINE_NETWORK_POLICY", '{"orchestratorNamespace": "sdc", "orchestratorLabels": {}, "x": 1}'
    )
    with pytest.raises(ValueError, match="x"):
        OperatorSettings()
    monkeypatch.delenv("SDC_ENGINE_NETWORK_POLICY")
    assert OperatorSettings().engine_network_policy is None


def test_desired_children_put_the_policy_first() -> None:
    """Created before the Deployment: no engine pod runs with its port open to every pod."""
    settings = OperatorSettings(metrics_port=0, engine_network_policy=BASE)
    kinds = [o["kind"] for o in desired_children(make(), settings)]
    assert kinds == ["NetworkPolicy", "PersistentVolumeClaim", "Deployment", "Service"]
    assert all(SPEC_HASH in o["metadata"]["annotations"] for o in desired_children(make(), settings))
    inside = [o["kind"] for o in desired_children(make(namespace="sdc"), settings)]
    assert inside == ["PersistentVolumeClaim", "Deployment", "Service"]
    assert "NetworkPolicy" not in [o["kind"] for o in desired_children(make(), OperatorSettings(metrics_port=0))]


def child(kind: str, name: str, owner_uid: str | None, uid: str = "c-1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "labels": {"llm.sdc.dev/localllm": "m"}}
    if owner_uid:
        meta["ownerReferences"] = [{"uid": owner_uid, "controller": True}]
    return {"kind": kind, "metadata": meta}


POLICY = {"kind": "NetworkPolicy", "metadata": {"name": "m"}}


@pytest.mark.parametrize(
    ("case", "desired", "observed", "want"),
    [
        ("wanted and present: kept", [POLICY], {("NetworkPolicy", "m"): child("NetworkPolicy", "m", "uid-1")}, []),
        (
            "ours, no longer wanted: deleted by its UID",
            [],
            {("NetworkPolicy", "m"): child("NetworkPolicy", "m", "uid-1", "np-1")},
            [("NetworkPolicy", "m", "np-1")],
        ),
        (
            "someone else's of the same name and label: never touched",
            [],
            {("NetworkPolicy", "m"): child("NetworkPolicy", "m", None)},
            [],
        ),
        (
            "a previous LocalLLM's of that name (another UID): never touched",
            [],
            {("NetworkPolicy", "m"): child("NetworkPolicy", "m", "uid-0")},
            [],
        ),
        (
            "other kinds are not pruned (a cache claim holds weights)",
            [],
            {
                ("PersistentVolumeClaim", "m-model-cache"): child("PersistentVolumeClaim", "m-model-cache", "uid-1"),
                ("Service", "m"): child("Service", "m", "uid-1"),
            },
            [],
        ),
    ],
)
def test_stale_children(
    case: str, desired: list[dict[str, Any]], observed: dict[tuple[str, str], dict[str, Any]], want: list[Any]
) -> None:
    assert stale_children(desired, observed, "uid-1", "m") == want, case


def test_a_deleted_policy_of_ours_is_repaired() -> None:
    assert manually_deleted(child("NetworkPolicy", "m", "uid-1"), "uid-1", "m")
    assert not manually_deleted(child("NetworkPolicy", "m", None), "uid-1", "m")
