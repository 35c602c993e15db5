"""The GPU fit estimate and the Ollama context default: pure functions, table-tested."""

from __future__ import annotations

from typing import Any

import pytest
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import engine_parts
from sdc_operator.fit import GPU_MEMORY_GIB, check_fit, fit_check, parameters_billion, weight_format
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec
from sdc_operator.status import Observed, derive_status

REV = "a" * 40
L4 = {"nvidia.com/gpu.product": "NVIDIA-L4"}


def spec(runtime: str = "vllm", name: str = "google/gemma-2-9b-it", gpus: int = 1, **extra: Any) -> LocalLLMSpec:
    model: dict[str, Any] = {"name": name, **({"revision": REV} if runtime != "ollama" else {})}
    model.update(extra.pop("model", {}))
    return LocalLLMSpec.model_validate(
        {"runtime": runtime, "model": model, "resources": {"gpus": gpus}, "scheduling": {"nodeSelector": L4}, **extra}
    )


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("google/gemma-2-9b-it", 9),
        ("gemma2:9b", 9),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56),
        ("meta-llama/Llama-3.1-70B-Instruct", 70),
        ("HuggingFaceTB/SmolLM2-135M", 0.135),
        ("llama3.1:8b-instruct-q8_0", 8),
        ("sdc/tiny-korean", None),
    ],
)
def test_parameters_from_the_name(name: str, billions: float | None) -> None:
    assert parameters_billion(name) == billions


@pytest.mark.parametrize(
    ("case", "the_spec", "fmt"),
    [
        ("vllm default bf16", spec(), "bfloat16"),
        ("vllm --quantization awq", spec(engine={"args": ["--quantization", "awq"]}), "awq"),
        ("vllm --dtype=float32", spec(engine={"args": ["--dtype=float32"]}), "float32"),
        ("ollama plain tag is 4-bit", spec("ollama", "gemma2:9b"), "q4_k_m"),
        ("ollama q8 tag", spec("ollama", "llama3.1:8b-instruct-q8_0"), "q8_0"),
        ("ollama fp16 tag", spec("ollama", "gemma2:9b-instruct-fp16"), "fp16"),
    ],
)
def test_weight_format(case: str, the_spec: LocalLLMSpec, fmt: str) -> None:
    assert weight_format(the_spec) == fmt, case


@pytest.mark.parametrize(
    ("case", "the_spec", "ok", "reason", "fragment"),
    [
        ("9B bf16 on one L4", spec(), True, "Fits", "needs ~20 GiB"),
        (
            "70B bf16 on one L4",
            spec(name="meta-llama/Llama-3.1-70B-Instruct"),
            False,
            "TooLarge",
            "1 x NVIDIA-L4 has 22",
        ),
        ("9B fp16 Ollama on one L4", spec("ollama", "gemma2:9b-instruct-fp16"), True, "Fits", "fp16"),
        ("27B Ollama 4-bit on one L4", spec("ollama", "gemma2:27b"), True, "Fits", "q4_k_m"),
        ("stated parameters win", spec(model={"parameterCount": "70B"}), False, "TooLarge", "70B parameters"),
        ("four L4s hold 27B bf16", spec(name="google/gemma-2-27b-it", gpus=4), True, "Fits", "4 x NVIDIA-L4 has 88"),
        ("CPU", spec("transformers", gpus=0), True, "CPU", "CPU"),
        (
            "9B int4 on the guide's RTX 3080",
            spec(
                "transformers",
                scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-3080"}},
                engine={"quantization": "int4"},
            ),
            True,
            "Fits",
            "9B parameters x 0.5 bytes (int4)",
        ),
        (
            "9B bf16 on the guide's RTX 3080",
            spec("transformers", scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-3080"}}),
            False,
            "TooLarge",
            "1 x NVIDIA-GeForce-RTX-3080 has 10",
        ),
        (
            "27B bf16 on two A40s",
            spec(
                name="google/gemma-2-27b-it",
                gpus=2,
                scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A40"}},
            ),
            True,
            "Fits",
            "2 x NVIDIA-A40 has 88",
        ),
        ("unknown size", spec(name="sdc/tiny-korean"), None, "UnknownSize", "model.parameterCount"),
    ],
)
def test_check_fit(case: str, the_spec: LocalLLMSpec, ok: bool | None, reason: str, fragment: str) -> None:
    fit = check_fit(the_spec, GPU_MEMORY_GIB)
    assert (fit.ok, fit.reason) == (ok, reason), (case, fit)
    assert fragment in fit.message, (case, fit.message)


def test_no_product_or_unknown_product_cannot_tell() -> None:
    bare = LocalLLMSpec.model_validate(
        {"runtime": "vllm", "model": {"name": "google/gemma-2-9b-it", "revision": REV}, "resources": {"gpus": 1}}
    )
    assert check_fit(bare, GPU_MEMORY_GIB).reason == "NoGPUProduct"
    odd = spec(scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B300"}})
    assert check_fit(odd, GPU_MEMORY_GIB).reason == "UnknownGPU"
    # the operator's setting extends (or overrides) the table
    settings = OperatorSettings(metrics_port=0, gpu_memory_gib={"NVIDIA-B300": 288, "NVIDIA-L4": 10})
    assert fit_check(odd, settings).ok is True
    assert fit_check(spec(), settings).ok is False


def test_a_too_large_model_says_so_in_condition_and_message() -> None:
    big = spec(name="meta-llama/Llama-3.1-70B-Instruct")
    status = derive_status(
        generation=1,
        desired_replicas=1,
        endpoint="http://x/v1",
        served_name="m",
        observed=Observed(),
        spec_errors=[],
        previous=[],
        now="2026-01-01T00:00:00Z",
        fit=fit_check(big, OperatorSettings(metrics_port=0)),
    )
    fits = next(c for c in status.conditions if c.type == "Fits")
    assert (fits.status, fits.reason) == ("False", "TooLarge")
    assert status.phase == "Pending" and status.message.startswith("may not fit: needs ~")


@pytest.mark.parametrize(("max_model_len", "expected"), [(None, "8192"), (32768, "32768")])
def test_ollama_context_defaults_to_the_guides_8192(max_model_len: int | None, expected: str) -> None:
    engine = {"maxModelLen": max_model_len} if max_model_len else {}
    llm = LocalLLM("m", "ns", "uid", 1, spec("ollama", "gemma2:9b", engine=engine))
    parts = engine_parts(llm, OperatorSettings(metrics_port=0))
    for container in (parts.container, *parts.init_containers):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OLLAMA_CONTEXT_LENGTH"] == expected
