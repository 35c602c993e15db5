"""Scale with demand on the real node (#24): 64 requests across a 0 -> 1, and a 2 -> 1 with requests in flight.

What the simulated tests cannot show: the chart's orchestrator, in its pod, holds 64 streamed chats for a
sdc-runtime LocalLLM at zero, asks for one replica exactly once (counted in the API server's audit log
when the cluster runs with SDC_CLUSTER_AUDIT=1, else in the orchestrator's own metric), and sends them all
to the real pod once it is Ready: none lost, no 5xx. Then the same LocalLLM at two replicas is scaled to
one while six clients keep streams in flight through the orchestrator: the leaving pod leaves the published
replicas within its preStop pause (the operator's default), before its engine stops, and no request fails.

The harness is shared with `make bench` (benchmarks/scale_from_zero.py, benchmarks/scale_down_drain.py),
which prints the time to first answer from zero and its split.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import scale_down_drain, scale_from_zero
from benchmarks.real_node import AUDIT_LOG, Release, new_release
from tests.conftest import Kubectl

# The first token after the pod is Ready: the target is 1 s; this 2-core machine, shared with
# builds, measured 0.4-1.2 s for the first of 64 released at once (REPORT.md), 2-5 s under heavier load. The
# bound here catches a routing regression (the orchestrator polling the file: 60-90 s), not the machine's load.
FIRST_TOKEN_AFTER_READY_S = 15
# Pod Ready -> the endpoints document names it: a model's first ready replica is written at once (0.03-0.07 s
# measured); the coalesced path it skips took 1.0 s every time (status, then endpoints, 0.5 s each), up to
# 2.4 s when the model's status had been written within its minimum interval.
PUBLISH_AFTER_READY_S = 0.9


@pytest.fixture(scope="module")
def release(
    kubectl: Kubectl, kubeconfig: Path, real_node: str, images: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    hub_root = scale_from_zero.prepare_hub(tmp_path_factory.mktemp("hub-scale"))
    rel = new_release(kubectl, kubeconfig, "e2e-scale")
    rel.extra_values = scale_from_zero.RELEASE_VALUES
    try:
        rel.install(hub_root)
        kubectl.apply(scale_from_zero.zero_llm("transformers", rel, hub_root))
        yield rel
    finally:
        rel.uninstall()


def scale_writes_counted_by_orchestrator(rel: Release) -> float:
    text = rel.kubectl(
        "exec",
        "-n",
        rel.ns,
        f"deploy/{rel.fullname}-orchestrator",
        "--",
        "python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/metrics').read().decode())",
    )
    found = re.findall(r'^sdc_orchestrator_scale_writes_total\{direction="up",outcome="scaled"\} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


@pytest.mark.timeout(3600)  # a cold run builds the images first (the `images` fixture)
def test_64_requests_across_zero_to_one(release: Release) -> None:
    model = scale_from_zero.wait_dormant(release, "zero")
    before = scale_writes_counted_by_orchestrator(release)
    result = scale_from_zero.one_wake(release, scale_from_zero.RUNTIMES["transformers"], "zero", model)
    print(f"\n0 -> 1 with 64 streamed chats: {result}")
    assert result["statuses"] == [200] and result["ok"] == 64, result["failed"]
    if AUDIT_LOG.exists():  # the cluster runs with SDC_CLUSTER_AUDIT=1: the API server's own count
        assert result["writes"] == 1, result["writers"]
    assert scale_writes_counted_by_orchestrator(release) - before == 1
    assert 0 <= result["first_after_ready_s"] < FIRST_TOKEN_AFTER_READY_S, result["split"]
    assert result["split"]["publish"] < PUBLISH_AFTER_READY_S, result["split"]


@pytest.mark.timeout(1800)
def test_scale_down_with_requests_in_flight_loses_none(release: Release) -> None:
    scale_down_drain.two_replicas(release, "zero")
    model = release.kubectl.get("llm", "zero", "-n", release.ns)["status"]["servedModelName"]
    result = scale_down_drain.scale_down_under_load(release, "zero", model, 8000)
    print(f"\n2 -> 1 under load: {result}")
    assert result["requests"] >= 20, "the clients barely ran"
    assert result["failed"] == 0, result["errors"]
    # Clients straight at the Service are measured, not asserted: a keep-alive connection kube-proxy pinned
    # to the leaving pod can be closed by its engine's shutdown as the next request goes out (REPORT.md).
    assert result["service_requests"] > 0
    # The leaving pod left the published replicas while its engine still served (the preStop pause).
    assert result["unpublished_after_mark_s"] < scale_down_drain_pause(), result
    assert len(result["per_replica"]) == 2, "both replicas served before the scale-down"


def scale_down_drain_pause() -> float:
    from sdc_operator.settings import OperatorSettings

    return float(OperatorSettings().engine_drain_seconds)
