"""Two operator replicas: peering lets exactly one act, and the other takes over when it dies.

Its own module, so no other operator from the rest of the suite is running.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, localllm, wait_phase

ENDPOINTS_NS = "sdc"


def test_two_replicas_take_turns(kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    """Peering: with two operators running, the higher priority acts; kill it and the other takes over."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s")
    peering = "sdc-operator"
    kubectl.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering, "namespace": namespace}}
    )
    common = {
        "SDC_STANDALONE": "false",
        "SDC_PEERING_LIFETIME_S": "6",
        "SDC_PEERING_NAME": peering,
        "SDC_WATCH_NAMESPACES": f'["{namespace}"]',
    }
    leader = OperatorProcess(kubeconfig, ENDPOINTS_NS, tmp_path / "leader.log", SDC_PEERING_PRIORITY="200", **common)
    standby = OperatorProcess(kubeconfig, ENDPOINTS_NS, tmp_path / "standby.log", SDC_PEERING_PRIORITY="100", **common)
    try:
        leader.start()
        standby.start()
        wait_until(
            "both peers to register",
            lambda: len(kubectl.get("kopfpeering", peering, "-n", namespace).get("status") or {}) == 2,
            timeout=60,
        )
        kubectl.apply(localllm("first", namespace, runtime="ollama", model="gemma2:9b", gpus=0))
        wait_phase(kubectl, "first", namespace, "Ready")
        assert "applied Deployment/first" in leader.tail(400)
        assert "applied Deployment/first" not in standby.tail(400)
        leader.kill()
        killed = time.monotonic()
        kubectl.apply(localllm("second", namespace, runtime="ollama", model="gemma2:9b", gpus=0))
        wait_until("the standby to act", lambda: "applied Deployment/second" in standby.tail(400), timeout=60)
        took = time.monotonic() - killed
        print(f"\nstandby took over {took:.1f}s after the active replica was killed (peering lifetime 6s)")
        assert took <= 30
        wait_phase(kubectl, "second", namespace, "Ready", timeout=120)
    finally:
        leader.stop()
        standby.stop()


def test_equal_priorities_are_refused_at_start(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """Kopf pauses every replica when two share a priority: the second one refuses to start instead."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s")
    peering = "sdc-operator"
    kubectl.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering, "namespace": namespace}}
    )
    common = {
        "SDC_STANDALONE": "false",
        "SDC_PEERING_LIFETIME_S": "30",
        "SDC_PEERING_NAME": peering,
        "SDC_WATCH_NAMESPACES": f'["{namespace}"]',
        "SDC_PEERING_PRIORITY": "100",
    }
    first = OperatorProcess(kubeconfig, ENDPOINTS_NS, tmp_path / "first.log", POD_ID="replica-a", **common)
    second = OperatorProcess(kubeconfig, ENDPOINTS_NS, tmp_path / "second.log", POD_ID="replica-b", **common)
    try:
        first.start()
        wait_until(
            "the first peer to register",
            lambda: "replica-a" in (kubectl.get("kopfpeering", peering, "-n", namespace).get("status") or {}),
            timeout=60,
        )
        second.start()
        assert second.proc is not None
        code = second.proc.wait(timeout=60)
        assert code != 0
        assert "refusing to start" in second.tail(20) and "replica-a" in second.tail(20)
        assert first.proc is not None and first.proc.poll() is None, "the running replica is unaffected"
    finally:
        first.stop()
        second.stop()
