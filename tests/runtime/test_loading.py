"""How sdc-runtime loads weights: the pure plan (table), the CLI contract, and the accelerate path on CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from sdc_runtime.loading import LoadOptionError, LoadOptions, LoadPlan, from_pretrained_kwargs, plan_load
from sdc_runtime.main import parser

PLANS = [
    # name, options, cuda, bf16, expected plan
    ("cpu defaults", LoadOptions(), False, False, LoadPlan(False, "float32", None, "none", False)),
    ("gpu defaults: bf16 and a device map", LoadOptions(), True, True, LoadPlan(True, "bfloat16", "auto", "none", False)),
    ("gpu without bf16: fp16 as in the guide", LoadOptions(), True, False, LoadPlan(True, "float16", "auto", "none", False)),
    ("explicit fp16", LoadOptions(dtype="float16"), True, True, LoadPlan(True, "float16", "auto", "none", False)),
    ("cpu forced on a gpu machine", LoadOptions(device="cpu"), True, True, LoadPlan(False, "float32", None, "none", False)),
    ("device map on cpu (the CI path)", LoadOptions(device="cpu", device_map="auto"), False, False,
     LoadPlan(False, "float32", "auto", "none", False)),
    ("no device map on a gpu", LoadOptions(device_map="none"), True, True, LoadPlan(True, "bfloat16", None, "none", False)),
    ("4-bit keeps a device map", LoadOptions(quantization="4bit", device_map="none"), True, True,
     LoadPlan(True, "bfloat16", "auto", "4bit", False)),
    ("remote code only when asked", LoadOptions(trust_remote_code=True), False, False,
     LoadPlan(False, "float32", None, "none", True)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "cuda", "bf16", "expected"), PLANS, ids=[p[0] for p in PLANS])
def test_plan_load(name: str, options: LoadOptions, cuda: bool, bf16: bool, expected: LoadPlan) -> None:
    assert plan_load(options, cuda_available=cuda, bf16_supported=bf16) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LoadOptions(device="cuda"), "no CUDA device"),
        (LoadOptions(quantization="8bit"), "needs a CUDA GPU"),
        (LoadOptions(device_map="everywhere"), "--device-map must be one of"),
    ],
)
def test_impossible_plans_are_refused(options: LoadOptions, message: str) -> None:
    with pytest.raises(LoadOptionError, match=message):
        plan_load(options, cuda_available=False, bf16_supported=False)


def test_cli_maps_to_options_and_keeps_remote_code_off_by_default() -> None:
    args = parser().parse_args(["--model", "/m"])
    assert (args.device, args.dtype, args.device_map, args.quantization, args.trust_remote_code) == (
        "auto",
        "auto",
        None,
        "none",
        False,
    )
    # The operator's flag for LocalLLM.spec.model.trustRemoteCode (the same one vLLM takes).
    args = parser().parse_args(["--model", "/m", "--trust-remote-code", "--dtype", "float16", "--device-map", "auto"])
    assert (args.trust_remote_code, args.dtype, args.device_map) == (True, "float16", "auto")


def test_kwargs_carry_dtype_device_map_and_remote_code() -> None:
    torch = pytest.importorskip("torch")
    kwargs = from_pretrained_kwargs(LoadPlan(True, "float16", "auto", "none", True))
    assert kwargs == {"dtype": torch.float16, "device_map": "auto", "trust_remote_code": True}
    assert "device_map" not in from_pretrained_kwargs(LoadPlan(False, "float32", None, "none", False))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_quantization_without_bitsandbytes_names_the_extra() -> None:
    pytest.importorskip("torch")
    with pytest.raises(LoadOptionError, match="runtime-quant"):
        from_pretrained_kwargs(LoadPlan(True, "float16", "auto", "4bit", False))


@pytest.mark.runtime
def test_device_map_load_path_runs_on_cpu(tiny_model_dir: Path) -> None:
    """The GPU path's loader (accelerate's device_map) loads and generates, here on CPU."""
    import asyncio

    from sdc_runtime.engine import Engine, SamplingParams

    engine = Engine(tiny_model_dir, options=LoadOptions(device="cpu", device_map="auto"))
    engine.load()
    # from_pretrained(device_map=...) refuses to load without accelerate: loading at all is the check.
    assert engine.plan is not None and engine.plan.device_map == "auto"
    assert {str(p.device) for p in engine.model.parameters()} == {"cpu"}

    async def generate() -> str:
        ids = engine.chat_prompt([{"role": "user", "content": "안녕"}])
        gen = engine.submit(ids, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
        return "".join([d async for d in gen.deltas()])

    assert asyncio.run(generate())


@pytest.mark.runtime
def test_quantization_on_cpu_is_a_clear_startup_error(tiny_model_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sdc_runtime", "--model", str(tiny_model_dir), "--quantization", "4bit", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert "needs a CUDA GPU" in out.stderr


def test_a_loaded_engine_is_warmed_up_before_it_says_so(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Scale from zero (#24): the held requests all land on the first forward passes of a fresh pod; torch's
    lazy set-up is paid before /health reports the model loaded, and a warm-up failure never fails the load."""
    import logging

    from sdc_runtime.engine import Engine

    engine = Engine(tiny_model_dir, options=LoadOptions(device="cpu"))
    with caplog.at_level(logging.INFO, logger="sdc_runtime.engine"):
        engine.load()
    assert engine.loaded.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("warmed up in") for m in messages), messages
    # A model whose forward pass fails still loads (warm-up skipped, said so).
    broken = Engine(tiny_model_dir, options=LoadOptions(device="cpu"))

    def no_template(_messages: object) -> list[int]:
        raise RuntimeError("no template")

    broken.chat_prompt = no_template  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.INFO, logger="sdc_runtime.engine"):
        broken.load()
    assert broken.loaded.is_set()
    assert any("warm-up skipped: no template" in r.getMessage() for r in caplog.records)
