"""A model's first ready replica is published at once; its later changes stay coalesced (#24, from zero).

The operator runs with a long coalescing window (3 s, and 6 s between one model's status writes), so the
coalesced path would take 6 s or more from the pod's readiness to the endpoints document (the status
first, then the document); only the fast path for a model going from 0 to 1 ready replica beats 2 s.
KWOK plays the engine: its pods turn Ready on their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, running_operator

ENDPOINTS_NS = "sdc"
FAST_S = 2.0


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("operator-first-replica")
    yield from running_operator(
        kubectl,
        kubeconfig,
        log_dir,
        ENDPOINTS_NS,
        SDC_PUBLISH_NAMESPACES='["*"]',
        SDC_STATUS_DEBOUNCE_S="3",
        SDC_STATUS_MIN_INTERVAL_S="6",
    )


def document(kubectl: Kubectl) -> dict[str, Any]:
    out = kubectl("get", "configmap", "sdc-endpoints", "-n", ENDPOINTS_NS, "-o", "json", check=False)
    return json.loads(json.loads(out)["data"]["endpoints.json"]) if out.startswith("{") else {}


def ready_pods(kubectl: Kubectl, namespace: str, name: str) -> int:
    pods = kubectl.get("pods", "-n", namespace, "-l", f"llm.sdc.dev/localllm={name}")["items"]
    return sum(
        1
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
    )


def replicas_published(kubectl: Kubectl, namespace: str, name: str) -> int:
    return sum(1 for e in document(kubectl).get("endpoints", []) if e.get("name") == f"{namespace}/{name}")


def test_the_first_ready_replica_is_published_without_the_coalescing_delay(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(localllm("zero", namespace, replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2}))
    wait_until(
        "the model published at zero",
        lambda: any(e.get("name") == f"{namespace}/zero" for e in document(kubectl).get("unready", [])),
        timeout=60,
    )
    kubectl("scale", "llm", "zero", "-n", namespace, "--replicas=1")
    wait_until("the pod Ready", lambda: ready_pods(kubectl, namespace, "zero") == 1, timeout=60, interval=0.05)
    seen_ready = time.monotonic()
    wait_until(
        "the replica published", lambda: replicas_published(kubectl, namespace, "zero") >= 1, timeout=30, interval=0.05
    )
    published_after = time.monotonic() - seen_ready
    print(f"\n0 -> 1: published {published_after:.2f}s after the pod was seen Ready")
    assert published_after < FAST_S, "the first ready replica waited for the coalesced writes"
    assert kubectl.get("llm", "zero", "-n", namespace)["status"]["phase"] == "Ready"
    # 1 -> 2 is not a first replica: it goes out with the coalesced writes, but it goes out.
    kubectl("scale", "llm", "zero", "-n", namespace, "--replicas=2")
    wait_until("both published", lambda: replicas_published(kubectl, namespace, "zero") == 2, timeout=60)
