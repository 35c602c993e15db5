"""Typed quantization per runtime, a model from a volume, scrape metadata and pod timings: pure, table-tested."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import deployment, desired_children
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec, semantic_errors
from sdc_operator.timings import durations

SETTINGS = OperatorSettings(metrics_port=0)
REV = "a" * 40


def make(runtime: str, name: str, **extra: Any) -> LocalLLM:
    model: dict[str, Any] = {"name": name, **({"revision": REV} if runtime != "ollama" else {})}
    model.update(extra.pop("model", {}))
    gpus = 1 if runtime == "vllm" else 0
    spec = {"runtime": runtime, "model": model, "resources": {"gpus": gpus}, **extra}
    return LocalLLM("m", "ns", "uid", 1, LocalLLMSpec.model_validate(spec))


def pod_of(llm: LocalLLM) -> dict[str, Any]:
    return dict(deployment(llm, SETTINGS)["spec"]["template"])


@pytest.mark.parametrize(
    ("case", "runtime", "name", "quant", "flag"),
    [
        ("vllm awq", "vllm", "Qwen/Qwen2.5-7B-Instruct-AWQ", "awq", ["--quantization", "awq"]),
        ("vllm fp8", "vllm", "google/gemma-2-9b-it", "fp8", ["--quantization", "fp8"]),
        ("vllm bitsandbytes", "vllm", "google/gemma-2-9b-it", "bitsandbytes", ["--quantization", "bitsandbytes"]),
        ("transformers int4", "transformers", "google/gemma-2-9b-it", "int4", ["--quantization", "4bit"]),
        ("ollama tag suffix: no flag", "ollama", "gemma2:9b-instruct-q8_0", "q8_0", []),
    ],
)
def test_quantization_becomes_the_engines_flag(case: str, runtime: str, name: str, quant: str, flag: list[str]) -> None:
    llm = make(runtime, name, engine={"quantization": quant}, resources={"gpus": 1})
    assert semantic_errors(llm.spec) == [], case
    args = pod_of(llm)["spec"]["containers"][0]["args"]
    found = [args[i : i + 2] for i in range(len(args) - 1) if args[i] == "--quantization"]
    assert found == ([flag] if flag else []), (case, args)


@pytest.mark.parametrize(
    ("case", "runtime", "name", "extra", "fragment"),
    [
        ("gptq on transformers", "transformers", "google/gemma-2-9b-it", {"engine": {"quantization": "gptq"}}, "int4"),
        ("int8 on vllm", "vllm", "google/gemma-2-9b-it", {"engine": {"quantization": "int8"}}, "awq"),
        ("int8 on cpu", "transformers", "google/gemma-2-9b-it", {"engine": {"quantization": "int8"}}, "needs a GPU"),
        ("int4 on cpu", "transformers", "google/gemma-2-9b-it", {"engine": {"quantization": "int4"}}, "needs a GPU"),
        ("ollama tag disagrees", "ollama", "gemma2:9b", {"engine": {"quantization": "q8_0"}}, "-q8_0"),
        (
            "flag twice",
            "vllm",
            "google/gemma-2-9b-it",
            {"engine": {"quantization": "awq", "args": ["--quantization=gptq"]}},
            "set it there only",
        ),
        ("volume on ollama", "ollama", "gemma2:9b", {"model": {"source": {"claimName": "c", "path": "p"}}}, "Ollama"),
    ],
)
def test_quantization_and_source_refusals_name_the_field(
    case: str, runtime: str, name: str, extra: dict[str, Any], fragment: str
) -> None:
    errors = semantic_errors(make(runtime, name, **extra).spec)
    assert errors and fragment in "; ".join(errors), (case, errors)


def test_unknown_quantization_is_refused_by_the_schema() -> None:
    with pytest.raises(ValidationError, match="quantization"):
        make("vllm", "google/gemma-2-9b-it", engine={"quantization": "int3"})


@pytest.mark.parametrize("bad_path", ["../etc", "/abs/path", "a/../../b", ""])
def test_model_volume_path_must_stay_inside(bad_path: str) -> None:
    with pytest.raises(ValidationError, match="path"):
        make("vllm", "sdc/gemma-ft", model={"source": {"claimName": "weights", "path": bad_path}})


def test_model_from_a_volume_skips_the_download() -> None:
    llm = make("vllm", "sdc/gemma-ft", model={"revision": None, "source": {"claimName": "weights", "path": "ft/v3"}})
    assert semantic_errors(llm.spec) == []
    pod = pod_of(llm)["spec"]
    assert pod["initContainers"] == []
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    assert pod["containers"][0]["args"][0] == "/models/ft/v3", "vllm serve's positional model"
    kinds = [o["kind"] for o in desired_children(llm, SETTINGS)]
    assert "PersistentVolumeClaim" not in kinds, "the user's claim is never built (nor owned)"


@pytest.mark.parametrize(
    ("runtime", "name", "scraped", "port"),
    [
        ("vllm", "google/gemma-2-9b-it", True, "8000"),
        ("transformers", "google/gemma-2-9b-it", True, "8000"),
        ("ollama", "gemma2:9b", True, "11434"),  # its exporter sidecar (sdc-ollama-exporter) owns Ollama's port
    ],
)
def test_model_pods_say_where_their_metrics_are(runtime: str, name: str, scraped: bool, port: str) -> None:
    meta = pod_of(make(runtime, name))["metadata"]
    assert meta["labels"]["llm.sdc.dev/runtime"] == runtime
    annotations = meta.get("annotations", {})
    assert (annotations.get("prometheus.io/scrape") == "true") is scraped
    if scraped:
        assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == port


def test_download_and_load_durations_from_pod_status() -> None:
    pod = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": "model-download",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:02:30Z",
                        }
                    },
                }
            ],
            "containerStatuses": [{"name": "vllm", "state": {"running": {"startedAt": "2026-01-01T00:02:31Z"}}}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:05:31Z"}],
        }
    }
    assert durations(pod) == {"download": 150.0, "load": 180.0}
    pod["status"]["conditions"][0]["status"] = "False"
    pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] = 1
    assert durations(pod) == {}
