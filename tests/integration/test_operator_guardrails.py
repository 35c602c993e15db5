"""What an admin must trust before installing the operator, checked on the local cluster.

Ownership (a foreign object of a child's name is never changed, the LocalLLM
reports `NameConflict` and recovers when the name is free), guardrails at
admission (CEL, naming the field) and in the operator (Failed, nothing built),
drift repair (hand edits reverted and deleted children back within 30 s, other
managers' fields kept), exact status after transitions, immutable cache fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdc_operator import kube
from sdc_operator.indexes import INDEX_NAMES
from sdc_operator.reconcile import NameConflictError, reconcile
from sdc_operator.state import State, spec_view

from tests.conftest import Kubectl, wait_until
from tests.integration.operator_harness import (
    OperatorProcess,
    localllm,
    run_kube,
    running_operator,
    tiny,
    wait_phase,
)
from tests.support.metrics import scrape

ENDPOINTS_NS = "sdc"
REPAIR_S = 30  # the bound for drift repair


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from running_operator(kubectl, kubeconfig, tmp_path_factory.mktemp("operator"), ENDPOINTS_NS)


def foreign_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"team": "payments"}},
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 443, "targetPort": 8443}]},
    }


def foreign_deployment(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    pod_labels = {"app": "payments"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "main", "image": "payments:1"}]},
            },
        },
    }


def fingerprint(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What another writer could change: identity, spec (and its generation), labels, owners, annotations.
    Not the resourceVersion: the object's own controllers keep writing its status."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("deployment.")}
    return (
        meta["uid"],
        meta.get("generation"),
        meta.get("ownerReferences"),
        meta.get("labels"),
        annotations,
        obj["spec"],
    )


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}


def test_foreign_object_of_a_child_name_is_untouched_until_freed(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(foreign_service("taken", namespace))
    before = fingerprint(kubectl.get("svc", "taken", "-n", namespace))
    kubectl.apply(tiny("taken", namespace))
    status = wait_until(
        "a NameConflict condition",
        lambda: (
            (c := conditions(kubectl.get("llm", "taken", "-n", namespace)).get("Ready"))
            and c["reason"] == "NameConflict"
            and c
        ),
    )
    assert "Service/taken" in status["message"], status
    time.sleep(3)  # give a wrong operator time to overwrite it
    assert fingerprint(kubectl.get("svc", "taken", "-n", namespace)) == before
    llm = kubectl.get("llm", "taken", "-n", namespace)
    assert llm["status"]["phase"] == "Failed"
    assert "endpoint" not in llm["status"]
    leftovers = kubectl("get", "deploy,pvc", "-n", namespace, "-o", "name")
    assert leftovers == "", "nothing is built beside a foreign object"
    freed = time.monotonic()
    kubectl("delete", "svc", "taken", "-n", namespace)
    ready = wait_phase(kubectl, "taken", namespace, "Ready", timeout=90)
    print(f"\nNameConflict: Ready {time.monotonic() - freed:.1f}s after the foreign Service was deleted")
    owners = kubectl.get("svc", "taken", "-n", namespace)["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == [ready["metadata"]["uid"]]


def test_a_name_taken_after_the_read_is_still_never_taken_over(
    kube_api: None, kubectl: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between the operator's read of a child's name and its create, made certain: the read
    reports the name free while a foreign Service holds it. The create carries a "no such object"
    precondition, so it is refused; the Service is read again and reported, never written."""
    kubectl.apply(foreign_service("raced", namespace))
    before = fingerprint(kubectl.get("svc", "raced", "-n", namespace))
    real_read, stale = kube.read, {("Service", "raced")}

    async def read_from_before_the_service(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        if (kind, name) in stale:
            stale.discard((kind, name))
            return None
        return await real_read(kind, ns, name)

    monkeypatch.setattr(kube, "read", read_from_before_the_service)
    body = tiny("raced", namespace)
    body["metadata"] |= {"uid": "00000000-0000-0000-0000-00000000beef", "generation": 1}  # no such owner: GC cleans
    del body["spec"]["scheduling"]  # the KWOK nodes' toleration is on the test operator's allow-list, not the default
    assert spec_view(State(), body).errors == []

    state = State()
    state.indexes.update({n: {} for n in INDEX_NAMES})  # the watches have seen nothing
    with pytest.raises(NameConflictError, match="Service/raced"):
        run_kube(reconcile(state, body, state.indexes, "test"))
    assert state.conflicts[(namespace, "raced")] == ["Service/raced"]
    assert not stale, "the read was the stale one"
    assert fingerprint(kubectl.get("svc", "raced", "-n", namespace)) == before


def test_invalid_spec_never_deletes_what_it_does_not_own(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # One unlabelled, one that even carries the operator's labels: neither is the LocalLLM's.
    kubectl.apply(
        [
            foreign_deployment("three", namespace),
            foreign_service("three", namespace),
            foreign_deployment("copycat", namespace, labels={"llm.sdc.dev/localllm": "copycat"}),
        ]
    )
    before = {
        (kind, name): fingerprint(kubectl.get(kind, name, "-n", namespace))
        for kind, name in (("deploy", "three"), ("svc", "three"), ("deploy", "copycat"))
    }
    # `three` is refused by an operator-side guardrail: an image outside the allow-list.
    kubectl.apply([tiny("three", namespace, engine={"image": "evil:1"}), tiny("copycat", namespace)])
    failed = wait_phase(kubectl, "three", namespace, "Failed")
    assert "engine.image" in failed["status"]["message"]
    wait_until(
        "copycat's NameConflict",
        lambda: (
            (conditions(kubectl.get("llm", "copycat", "-n", namespace)).get("Ready") or {}).get("reason")
            == "NameConflict"
        ),
    )
    time.sleep(3)
    after = {
        (kind, name): fingerprint(kubectl.get(kind, name, "-n", namespace))
        for kind, name in (("deploy", "three"), ("svc", "three"), ("deploy", "copycat"))
    }
    assert after == before


def test_admission_refuses_what_cel_can_say(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    cases = {
        "dotted name": (tiny("a.b.c", namespace), "metadata.name"),
        "tokenizer from another repository": (
            tiny("tok", namespace, engine={"args": ["--tokenizer=evil/repo"]}),
            "spec.engine.args",
        ),
        "remote code through args": (tiny("code", namespace, engine={"args": ["--trust_remote_code"]}), "remote code"),
        "a positional model after a flag's value": (
            tiny("pos", namespace, engine={"args": ["--max-batch", "4", "other/model"]}),
            "positional argument",
        ),
        "a positional model alone": (tiny("bare", namespace, engine={"args": ["other/model"]}), "spec.engine.args"),
        "operator-owned env": (
            tiny("env", namespace, engine={"env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}),
            "spec.engine.env",
        ),
    }
    outcomes = {}
    for case, (body, fragment) in cases.items():
        out = kubectl("apply", "-f", "-", stdin=json.dumps(body), check=False)
        outcomes[case] = (fragment in out and "Invalid" in out, out.strip()[-300:])
    assert {k: v[0] for k, v in outcomes.items()} == dict.fromkeys(cases, True), outcomes
    assert kubectl("get", "llm", "-n", namespace, "-o", "name") == ""
    # A flag's value, separate or joined, is no positional: admitted (a server-side dry run).
    allowed = tiny("flags", namespace, engine={"args": ["--max-batch", "4", "--device=cpu", "--seed", "-1"]})
    out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(allowed), check=False)
    assert "created (server dry run)" in out, out


@pytest.mark.parametrize(
    ("case", "spec", "fragment"),
    [
        ("image outside the allow-list", {"engine": {"image": "evil.io/miner:1"}}, "engine.image"),
        (
            "control-plane toleration",
            {"scheduling": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
            "scheduling.tolerations",
        ),
        ("priority class", {"scheduling": {"priorityClassName": "system-node-critical"}}, "priorityClassName"),
        ("remote code outside the allow-list", {"model": {"trustRemoteCode": True}}, "model.trustRemoteCode"),
    ],
)
def test_operator_guardrails_fail_with_nothing_built(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, case: str, spec: dict[str, Any], fragment: str
) -> None:
    kubectl.apply(tiny("guarded", namespace, **spec))
    failed = wait_phase(kubectl, "guarded", namespace, "Failed")
    assert fragment in failed["status"]["message"], (case, failed["status"])
    time.sleep(2)
    assert kubectl("get", "deploy,svc,pvc", "-n", namespace, "-o", "name") == "", case


def test_immutable_cache_fields_are_refused_with_a_migration_path(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(tiny("cache", namespace))
    wait_phase(kubectl, "cache", namespace, "Ready")
    patches = {
        "cache.accessMode": {"cache": {"accessMode": "ReadWriteMany"}},
        "cache.storageClassName": {"cache": {"storageClassName": "fast"}},
        "cache.size": {"cache": {"size": "1Gi"}},
    }
    for field, patch in patches.items():
        out = kubectl(
            "patch", "llm", "cache", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": patch}), check=False
        )
        assert f"spec.{field}" in out and "new name" in out, (field, out)
    time.sleep(2)
    assert kubectl.get("llm", "cache", "-n", namespace)["status"]["phase"] == "Ready", "never Failed for it"


def _pod_spec(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    return dict(kubectl.get("deploy", name, "-n", namespace)["spec"]["template"]["spec"])


def test_drift_is_repaired_and_other_managers_keep_their_fields(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(tiny("drift", namespace))
    wait_phase(kubectl, "drift", namespace, "Ready")
    image = _pod_spec(kubectl, "drift", namespace)["containers"][0]["image"]
    kubectl("annotate", "deploy", "drift", "-n", namespace, "backup.example.com/schedule=daily")
    timings = {}

    def repaired(what: str, check: Any) -> None:
        started = time.monotonic()
        wait_until(what, check, timeout=REPAIR_S, interval=0.2)
        timings[what] = round(time.monotonic() - started, 2)

    kubectl("set", "image", "deploy/drift", "-n", namespace, "transformers=evil:1")
    repaired("image", lambda: _pod_spec(kubectl, "drift", namespace)["containers"][0]["image"] == image)
    kubectl("patch", "svc", "drift", "-n", namespace, "--type=json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":9999}]')  # fmt: skip
    repaired("service port", lambda: kubectl.get("svc", "drift", "-n", namespace)["spec"]["ports"][0]["port"] == 8000)
    kubectl("scale", "deploy", "drift", "-n", namespace, "--replicas=3")
    repaired("replicas", lambda: kubectl.get("deploy", "drift", "-n", namespace)["spec"]["replicas"] == 1)
    kubectl("delete", "svc", "drift", "-n", namespace)
    repaired("deleted Service", lambda: kubectl("get", "svc", "drift", "-n", namespace, check=False).startswith("NAME"))
    kubectl("delete", "deploy", "drift", "-n", namespace)
    repaired("deleted Deployment", lambda: kubectl("get", "deploy", "-n", namespace, "-o", "name").strip() == "deployment.apps/drift")  # fmt: skip
    print(f"\ndrift repaired after (s): {timings}")
    # An HPA owns replicas through the scale subresource as kube-controller-manager: that value stands.
    kubectl(
        "patch", "deploy", "drift", "-n", namespace, "--subresource=scale", "--type=merge",
        "-p", '{"spec":{"replicas":2}}', "--field-manager=kube-controller-manager",
    )  # fmt: skip
    kubectl("annotate", "deploy", "drift", "-n", namespace, "backup.example.com/schedule=daily", "--overwrite")
    kubectl("set", "image", "deploy/drift", "-n", namespace, "transformers=evil:2")  # forces a repair
    repaired("image again", lambda: _pod_spec(kubectl, "drift", namespace)["containers"][0]["image"] == image)
    dep = kubectl.get("deploy", "drift", "-n", namespace)
    assert dep["spec"]["replicas"] == 2, "the HPA's replicas survive a repair"
    assert dep["metadata"]["annotations"]["backup.example.com/schedule"] == "daily"


def test_failed_repair_is_retried_without_further_events(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """A repair the API server refuses (a quota) converges once the cause is gone, with no event to wake it."""
    kubectl.apply(tiny("retry", namespace))
    wait_phase(kubectl, "retry", namespace, "Ready")
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-deployments", "namespace": namespace},
        "spec": {"hard": {"count/deployments.apps": "0"}},
    }
    kubectl.apply(quota)
    kubectl("delete", "deploy", "retry", "-n", namespace)
    wait_until(
        "the repair refused by the quota",
        lambda: "quota" in kubectl.get("llm", "retry", "-n", namespace)["status"]["message"],
        timeout=REPAIR_S,
        interval=0.5,
    )
    time.sleep(3)  # the garbage collector's pod deletions are over: no child event is left to retry on
    kubectl("delete", "resourcequota", "no-deployments", "-n", namespace)
    started = time.monotonic()
    wait_until(
        "the Deployment back after the quota is gone",
        lambda: kubectl("get", "deploy", "-n", namespace, "-o", "name").strip() == "deployment.apps/retry",
        timeout=REPAIR_S,
        interval=0.5,
    )
    print(f"\nrepair retried and done {time.monotonic() - started:.1f}s after the quota was removed")
    wait_phase(kubectl, "retry", namespace, "Ready")


def test_status_is_exact_after_every_transition(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(tiny("exact", namespace))
    ready = wait_phase(kubectl, "exact", namespace, "Ready")
    assert ready["status"]["endpoint"].endswith(":8000/v1")
    kubectl("patch", "llm", "exact", "-n", namespace, "--type=merge", "-p", '{"spec":{"engine":{"image":"evil:1"}}}')
    failed = wait_phase(kubectl, "exact", namespace, "Failed")
    assert "endpoint" not in failed["status"], failed["status"]
    # A stale key written by someone else is removed too.
    kubectl(
        "patch", "llm", "exact", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status":{"endpoint":"http://stale/v1"}}',
    )  # fmt: skip
    wait_until(
        "the stale endpoint to be removed",
        lambda: "endpoint" not in kubectl.get("llm", "exact", "-n", namespace)["status"],
        timeout=REPAIR_S,
    )
    kubectl("patch", "llm", "exact", "-n", namespace, "--type=json", "-p", '[{"op":"remove","path":"/spec/engine/image"}]')  # fmt: skip
    again = wait_phase(kubectl, "exact", namespace, "Ready")
    assert again["status"]["endpoint"] == ready["status"]["endpoint"]
    assert again["status"]["observedGeneration"] == again["metadata"]["generation"]


def test_restart_over_converged_objects_writes_nothing(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """No false drift: a restarted operator finds every child as the spec wants it and writes nothing."""
    kubectl.apply(
        [
            tiny("calm-t", namespace),
            localllm("calm-o", namespace, runtime="ollama", model="gemma2:9b", gpus=0),
            localllm("calm-v", namespace, gpus=2, resources={"cpu": "0.5", "memory": "1Gi"}),
        ]
    )
    for name in ("calm-t", "calm-o", "calm-v"):
        wait_phase(kubectl, name, namespace, "Ready")
    # The operator watches every namespace: LocalLLMs of earlier tests still being torn down (real pods take
    # their grace period) would be written to, and counted, after the restart.
    wait_until(
        "earlier tests' LocalLLMs to be gone",
        lambda: {i["metadata"]["namespace"] for i in kubectl.get("llm", "-A")["items"]} <= {namespace},
        timeout=180,
        interval=1,
    )
    time.sleep(3)  # trailing status writes
    operator.stop()
    operator.start()
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"

    def ready_models() -> float:
        try:
            return scrape(url, "sdc_operator_models", phase="Ready")
        except httpx.HTTPError:  # not serving metrics yet
            return 0

    wait_until("the restarted operator to count its models", lambda: ready_models() >= 3, timeout=60)
    time.sleep(5)
    writes = {
        "applies": scrape(url, "sdc_operator_applies_total"),
        "status writes": scrape(url, "sdc_operator_status_writes_total"),
    }
    assert writes == {"applies": 0, "status writes": 0}, operator.tail(30)
