"""Will the model fit the GPUs it asks for? An estimate before pods wait for a GPU.

A pod that asks for one L4 and then runs out of memory loading a 70B model
wastes a GPU node's time and tells the user only "CrashLoopBackOff" ten
minutes later. The operator knows enough to warn at once: the parameter count
(spec.model.parameterCount, else the size in the model's name: gemma-2-9b-it,
gemma2:9b, Qwen2.5-0.5B, Mixtral-8x7B), the bytes each weight takes (the
dtype or quantization: vLLM's --dtype/--quantization arguments, an Ollama
tag's quantization suffix, Ollama's 4-bit default) and the target GPU product
(the pod's nodeSelector on `nvidia.com/gpu.product`, the label NVIDIA's GPU
feature discovery puts on nodes) with its memory from a table the operator's
settings can extend or override (SDC_GPU_MEMORY_GIB).

The estimate is weights x 1.2: KV cache for a useful context, activations and
the CUDA context need room beyond the weights. It is a warning, not a gate:
the condition `Fits` is False with the figures, the phase is not changed,
because a team that knows better (CPU offload, a smaller context) may go on.
Pure: spec and table in, (status, reason, message) out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec
from sdc_operator.status import Check

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
OVERHEAD = 1.2

# Memory per GPU (GiB) by the `nvidia.com/gpu.product` label value of GPU feature discovery.
GPU_MEMORY_GIB: dict[str, float] = {
    "Tesla-T4": 15,
    "Tesla-V100-SXM2-16GB": 16,
    "Tesla-V100-SXM2-32GB": 32,
    "NVIDIA-L4": 22,
    "NVIDIA-A10": 22,
    "NVIDIA-A10G": 22,
    "NVIDIA-L40S": 44,
    "NVIDIA-RTX-A6000": 48,
    "NVIDIA-GeForce-RTX-4090": 24,
    # The migration guide's GPUs: a workstation RTX 3080 (10 or 12 GB) and the A40 (48 GB, like the L40S).
    "NVIDIA-GeForce-RTX-3080": 10,
    "NVIDIA-GeForce-RTX-3080-Ti": 12,
    "NVIDIA-GeForce-RTX-3090": 24,
    "NVIDIA-A40": 44,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-H100-PCIe": 80,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-NVL": 94,
    "NVIDIA-H200": 141,
}

# Bytes per weight by dtype or quantization (4-bit formats carry scales: a little over 0.5).
BYTES_PER_WEIGHT: dict[str, float] = {
    "float32": 4,
    "fp32": 4,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "bfloat16": 2,
    "bf16": 2,
    "auto": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,  # the transformers runtime's bitsandbytes 4-bit: half a byte per weight
    "q8_0": 1.07,
    "q6_k": 0.82,
    "q5_k_m": 0.71,
    "q5_0": 0.69,
    "q4_k_m": 0.6,
    "q4_k_s": 0.57,
    "q4_0": 0.56,
    "q3_k_m": 0.49,
    "q2_k": 0.41,
    "awq": 0.56,
    "gptq": 0.56,
    "bitsandbytes": 0.56,
    "4bit": 0.56,
    "8bit": 1.07,
}
OLLAMA_DEFAULT = "q4_k_m"  # what Ollama's plain tags (gemma2:9b) are

_SIZE = re.compile(r"(?<![0-9a-z.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Fit:
    ok: bool | None  # None: cannot tell
    reason: str
    message: str


def parameters_billion(text: str) -> float | None:
    """The parameter count a model's name (or spec.model.parameterCount) states, in billions."""
    found = None
    for match in _SIZE.finditer(text.replace("_", "-")):
        experts, size, unit = match.groups()
        value = float(size) * (int(experts) if experts else 1)
        found = value / 1000 if unit.lower() == "m" else value
    return found


def _arg(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def weight_format(spec: LocalLLMSpec) -> str:
    """The dtype or quantization the engine will load the weights in."""
    quantization = getattr(spec.engine, "quantization", None)
    if quantization:
        return str(quantization).lower()
    if spec.runtime == "ollama":
        tag = spec.model.name.split(":", 1)[1].lower() if ":" in spec.model.name else ""
        for fmt in sorted(BYTES_PER_WEIGHT, key=len, reverse=True):
            if tag.endswith(fmt):
                return fmt
        return OLLAMA_DEFAULT
    return (_arg(spec.engine.args, "--quantization") or _arg(spec.engine.args, "--dtype") or "bfloat16").lower()


def needed_gib(spec: LocalLLMSpec) -> tuple[float, str] | None:
    """Estimated GPU memory (GiB) and how it was reckoned; None when the size is unknown."""
    stated = spec.model.parameter_count
    billions = parameters_billion(str(stated)) if stated else parameters_billion(spec.model.name)
    if billions is None:
        return None
    fmt = weight_format(spec)
    per_weight = BYTES_PER_WEIGHT.get(fmt, 2.0)
    gib = billions * 1e9 * per_weight * OVERHEAD / 1024**3
    return gib, f"{billions:g}B parameters x {per_weight:g} bytes ({fmt}) + {round((OVERHEAD - 1) * 100)}%"


def check_fit(spec: LocalLLMSpec, gpu_memory: Mapping[str, float]) -> Fit:
    if spec.resources.gpus == 0:
        return Fit(True, "CPU", "runs on CPU: no GPU memory to fit")
    product = spec.scheduling.node_selector.get(GPU_PRODUCT_LABEL)
    if not product:
        return Fit(None, "NoGPUProduct", f"set scheduling.nodeSelector {GPU_PRODUCT_LABEL} to check the fit")
    per_gpu = gpu_memory.get(product)
    if per_gpu is None:
        return Fit(None, "UnknownGPU", f"GPU memory of {product} unknown: add it to SDC_GPU_MEMORY_GIB")
    estimate = needed_gib(spec)
    if estimate is None:
        return Fit(None, "UnknownSize", "model size unknown: set model.parameterCount (e.g. 9B)")
    need, how = estimate
    have = per_gpu * spec.resources.gpus
    figures = f"needs ~{need:.0f} GiB ({how}), {spec.resources.gpus} x {product} has {have:g} GiB"
    if need > have:
        return Fit(False, "TooLarge", f"{figures}: more GPUs, a larger GPU or a quantized model")
    return Fit(True, "Fits", figures)


def fit_check(spec: LocalLLMSpec, settings: OperatorSettings) -> Check:
    """The `Fits` condition's check, with the settings' table over the built-in one."""
    result = check_fit(spec, {**GPU_MEMORY_GIB, **settings.gpu_memory_gib})
    return Check(result.ok, result.reason, result.message)
