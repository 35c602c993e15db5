"""The chart's migration and observability values, rendered without a cluster."""

from __future__ import annotations

import json

import pytest

from tests.chart.test_chart_render import CHART, env_of, helm, kinds, render


def orchestrator_env(*sets: str) -> dict[str, object]:
    docs = render(*sets)
    return env_of(next(d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("orchestrator")))


def test_the_guides_sampling_and_auto_reach_the_orchestrator() -> None:
    env = orchestrator_env("orchestrator.defaultProvider=auto")
    assert env["LLM_SERVICE_TYPE"] == "auto"
    assert (env["LLM_TEMPERATURE"], env["LLM_TOP_P"], env["LLM_MAX_TOKENS"]) == ("0.3", "0.8", "2048")
    assert "SDC_SHADOW_PROVIDER" not in env, "shadow traffic is off unless asked for"
    env = orchestrator_env("orchestrator.shadow.provider=gemini", "orchestrator.shadow.concurrency=2")
    assert (env["SDC_SHADOW_PROVIDER"], env["SDC_SHADOW_CONCURRENCY"]) == ("gemini", "2")
    assert env["SDC_SHADOW_KEEP_TEXTS"] == "0", "texts are kept only when asked for"
    env = orchestrator_env("orchestrator.shadow.provider=vllm", "orchestrator.shadow.keepTexts=50")
    assert env["SDC_SHADOW_KEEP_TEXTS"] == "50"


@pytest.mark.parametrize(
    ("case", "setting", "fragment"),
    [
        ("unknown shadow provider", "orchestrator.shadow.provider=claude", "shadow"),
        ("top_p above 1", "orchestrator.sampling.topP=1.5", "topP"),
        ("typo in cost", "metrics.cost.gpuHours=2", "gpuHours"),
    ],
)
def test_bad_migration_values_are_refused(case: str, setting: str, fragment: str) -> None:
    result = helm("template", "sdc", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0 and fragment in result.stderr, (case, result.stderr)


def test_model_pods_dcgm_and_the_cost_panel() -> None:
    docs = render(
        "metrics.podMonitor.enabled=true",
        "metrics.dcgm.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        extra=["--set-json", "metrics.cost.gpuHour=2.5"],  # --set makes 2.5 a string
    )
    podmonitor = kinds(docs, "PodMonitor")[0]
    assert podmonitor["spec"]["namespaceSelector"] == {"any": True}
    assert podmonitor["spec"]["selector"]["matchExpressions"][0]["values"] == ["vllm", "transformers", "ollama"]
    dcgm = next(d for d in kinds(docs, "ServiceMonitor") if d["metadata"]["name"].endswith("dcgm"))
    assert dcgm["spec"]["namespaceSelector"] == {"matchNames": ["gpu-operator"]}
    dashboard = json.loads(kinds(docs, "ConfigMap")[0]["data"]["sdc.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    cost = next(e for e in exprs if "nvidia_com_gpu" in e)
    assert cost.endswith("* 2.5") and not any("_PRICE__" in e for e in exprs)
    assert any("DCGM_FI_DEV_GPU_UTIL" in e for e in exprs) and any("shadow_similarity" in e for e in exprs)


@pytest.mark.parametrize("values", sorted((CHART / "migration").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_migration_phase_lints(values: object) -> None:
    args = ["template", "sdc", str(CHART), "-f", str(values), "--api-versions", "llm.sdc.dev/v1alpha1/LocalLLM"]
    assert helm(*args).returncode == 0
