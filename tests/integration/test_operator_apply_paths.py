"""A refused apply repairs every drifted list, however many fields drifted (the reconciler on the local cluster).

A Service port edited by hand cannot be undone by server-side apply: the ports merge by port and protocol,
so the apply would add a second port named `http` and is refused (422). The reconciler then replaces the
drifted lists with JSON patches, and it must know every drifted path to do so: the plan's reason is a
five-path summary for the log, so six drifted fields with the port last once left the port broken.
"""

from __future__ import annotations

from typing import Any

from sdc_operator import kube
from sdc_operator.indexes import INDEX_NAMES
from sdc_operator.reconcile import reconcile
from sdc_operator.state import State

from tests.conftest import Kubectl
from tests.integration.operator_harness import localllm, run_kube

HAND = "by-hand"


def pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def reconcile_once(body: dict[str, Any]) -> None:
    """One reconcile by a fresh operator state whose watches have seen nothing: every child is read."""
    state = State()
    state.indexes.update({n: {} for n in INDEX_NAMES})
    run_kube(reconcile(state, body, state.indexes, "test"))


def test_a_refused_apply_repairs_a_list_after_five_other_drifted_fields(
    kube_api: None, kubectl: Kubectl, namespace: str
) -> None:
    body = localllm("six", namespace, runtime="transformers", model="sdc/tiny", gpus=0)
    del body["spec"]["scheduling"]  # the KWOK toleration is not on the default allow-list; no pod is needed here
    kubectl.apply(body)
    body = kubectl.get("llm", "six", "-n", namespace)
    reconcile_once(body)
    built = kubectl.get("svc", "six", "-n", namespace)
    labels, selector, ports = built["metadata"]["labels"], built["spec"]["selector"], built["spec"]["ports"]
    assert len(labels) == 4 and len(selector) == 1 and len(ports) == 1

    # Five plain fields (every label and the selector), then the port: the sixth drifted path.
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": pointer("metadata", "labels", k), "value": HAND} for k in labels
    ]
    ops += [{"op": "replace", "path": pointer("spec", "selector", k), "value": HAND} for k in selector]
    ops += [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]
    run_kube(kube.json_patch("Service", namespace, "six", ops))
    edited = kubectl.get("svc", "six", "-n", namespace)
    assert edited["spec"]["ports"][0]["port"] == 9999 and set(edited["metadata"]["labels"].values()) == {HAND}

    reconcile_once(body)
    repaired = kubectl.get("svc", "six", "-n", namespace)
    assert [(p["name"], p["port"]) for p in repaired["spec"]["ports"]] == [(p["name"], p["port"]) for p in ports]
    assert repaired["metadata"]["labels"] == labels
    assert repaired["spec"]["selector"] == selector
