"""Engine-aware routing over two real sdc-runtime replicas of the tiny model, through the real orchestrator.

The replicas are published as the operator publishes pods (one entry each, with `metricsUrl`): each prompt's
prefix stays on one replica, both replicas serve, and every answer names its replica.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sdc_orchestrator.app import create_app
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.servers import runtime_process, serve

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    from sdc_runtime.tiny import make_tiny_model

    model = make_tiny_model(tmp_path_factory.mktemp("tiny-replicas") / "tiny-chat")
    with ExitStack() as stack:
        yield [stack.enter_context(runtime_process(model, "tiny")) for _ in range(2)]


def test_prefixes_stay_on_their_replica(replicas: list[str], tmp_path: Path) -> None:
    entries = [
        {
            "name": "sdc/tiny",
            "namespace": "sdc",
            "localLLM": "tiny",
            "replica": f"tiny-{i}",
            "runtime": "transformers",
            "model": "tiny",
            "baseUrl": f"{base}/v1",
            "metricsUrl": f"{base}/metrics",
            "weight": 100,
        }
        for i, base in enumerate(replicas)
    ]
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(json.dumps({"endpoints": entries}))
    settings = OrchestratorSettings(
        llm_service_type="none",
        llm_fallback="none",
        sdc_endpoints_file=endpoints,
        sdc_namespace="sdc",
        sdc_data_dir=tmp_path / "data",
    )
    prompts = [
        f"document {d}: " + f"the policy number {d} says leave is granted after {d} months. " * 3 for d in range(6)
    ]
    where: dict[int, set[str]] = {}
    with serve(create_app(settings)) as base, httpx.Client(timeout=60) as client:
        for round_ in range(3):
            for d, prompt in enumerate(prompts):
                body = {
                    "model": "tiny",
                    "max_tokens": 4,
                    "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": f"q{round_}"}],
                }
                resp = client.post(f"{base}/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                where.setdefault(d, set()).add(resp.headers["x-sdc-replica"])
        decisions = client.get(f"{base}/metrics").text
    assert all(len(names) == 1 for names in where.values()), where
    used = Counter(next(iter(names)) for names in where.values())
    assert set(used) == {"sdc/tiny/tiny-0", "sdc/tiny/tiny-1"}, used
    assert 'sdc_orchestrator_route_decisions_total{reason="affinity"}' in decisions
