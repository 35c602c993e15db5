"""The migration runbook walked through: each phase's chart values drive a real orchestrator.

For every file in charts/sdc/migration/ the chart is rendered with Helm, the
orchestrator container's environment and the LocalLLM's routing weight are
taken from the rendered objects, the weight is published the way the operator
publishes it, and a real orchestrator started from that environment answers
200 users. The share each side gets must be what docs/migration-runbook.md
promises for the phase; phase 3 must still fall back to Gemini, and the
rollback must put every user back on Gemini without a restart.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sdc_orchestrator.app import create_app
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.fake_openai import FakeBackend
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sdc"
HELM = str(ROOT / "bin" / "helm")
LOCALLLM_API = "llm.sdc.dev/v1alpha1/LocalLLM"
PHASES = sorted((CHART / "migration").glob("phase-*.yaml"))
AUTH = {"Authorization": "Bearer runbook-key"}
LOCAL_SHARE = {"0": 0.0, "1": 0.1, "2": 0.8, "3": 1.0, "4": 0.0}
Backends = dict[str, tuple[FakeBackend, str]]


def rendered(values: Path) -> tuple[dict[str, str], int]:
    """The orchestrator's literal env and the LocalLLM's routing weight, as Helm renders them."""
    out = subprocess.run(
        [HELM, "template", "sdc", str(CHART), "-n", "sdc", "-f", str(values), "--api-versions", LOCALLLM_API],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("orchestrator"))
    env = {e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    llm = next(d for d in docs if d["kind"] == "LocalLLM")
    return env, int(llm["spec"]["routing"]["weight"])


def ask(base: str, users: int = 200) -> Counter[str]:
    counts: Counter[str] = Counter()
    for i in range(users):
        resp = httpx.post(
            f"{base}/api/v1/chat", json={"message": "질문"}, headers={**AUTH, "X-SDC-User": f"user-{i}"}, timeout=10
        )
        assert resp.status_code == 200, resp.text
        counts[resp.json()["provider"]] += 1
    return counts


def test_the_runbook_has_every_phase() -> None:
    assert [p.name.split("-")[1] for p in PHASES] == list(LOCAL_SHARE)
    runbook = (ROOT / "docs" / "migration-runbook.md").read_text()
    for phase in PHASES:
        assert f"charts/sdc/migration/{phase.name}" in runbook, phase.name


@pytest.mark.parametrize("values", PHASES, ids=lambda p: p.stem)
def test_phase_values_split_traffic_as_promised(
    values: Path, backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, weight = rendered(values)
    assert env["LLM_SERVICE_TYPE"] == "auto"
    endpoints = tmp_path / "endpoints.json"
    published: dict[str, Any] = {
        "name": "sdc/gemma2-9b",
        "runtime": "vllm",
        "model": "google/gemma-2-9b-it",
        "baseUrl": backends["vllm"][1] + "/v1",
        "weight": weight,
        "role": "chat",
    }
    endpoints.write_text(json.dumps({"endpoints": [published]}))
    for name in list(os.environ):
        if name.startswith(("LLM_", "GEMINI_", "SDC_", "VLLM_", "OLLAMA_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # what the cluster would supply: the key's Secret, the endpoints ConfigMap, the data volume; Gemini's stand-in
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GEMINI_BASE_URL", backends["gemini"][1] + "/v1")
    monkeypatch.setenv("SDC_ENDPOINTS_FILE", str(endpoints))
    monkeypatch.setenv("SDC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SDC_COOLDOWN_S", "30")
    keys = tmp_path / "keys"
    keys.write_text("runbook:runbook-key\n")
    monkeypatch.setenv("SDC_API_KEYS_FILE", str(keys))  # the chart mounts the keys Secret there
    phase = values.name.split("-")[1]
    with serve(create_app(OrchestratorSettings())) as base:
        counts = ask(base)
        share = counts["vllm"] / 200
        assert abs(share - LOCAL_SHARE[phase]) <= 0.08, (values.name, counts)
        if phase == "3":  # local only, Gemini as the fallback
            backends["vllm"][0].mode = "fail"
            body = httpx.post(f"{base}/api/v1/chat", json={"message": "질문"}, headers=AUTH, timeout=10).json()
            assert body["provider"] == "gemini" and body["fallback_used"] is True
            backends["vllm"][0].mode = "ok"
            # the rollback, live: publish phase 4's weight, no restart
            _, rollback_weight = rendered(PHASES[-1])
            endpoints.write_text(json.dumps({"endpoints": [{**published, "weight": rollback_weight}]}))
            os.utime(endpoints, (1, 1))
            after = ask(base, 40)
            assert after == Counter({"gemini": 40}), after
        if env.get("SDC_SHADOW_PROVIDER"):
            report = httpx.get(f"{base}/api/v1/shadow/report", headers=AUTH, timeout=30).json()
            assert report["shadow_provider"] == env["SDC_SHADOW_PROVIDER"]
            assert sum(report["outcomes"].values()) > 0
