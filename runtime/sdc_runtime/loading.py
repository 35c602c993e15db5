"""How to load the weights: device, dtype, device map, 4/8-bit, remote code.

A pure planner (options + what the machine has -> a plan) kept apart from the
loading itself, so every combination is table-tested without a GPU, and the
one path that needs `accelerate` (`device_map`) also runs on CPU in CI.

The choices follow the Transformers serving guide: half precision on a GPU
(bfloat16 where the card has it, else float16), `device_map="auto"` so a
model larger than one card spreads over the visible ones, bitsandbytes 4/8-bit
only on request (and only on CUDA), float32 on CPU (half-precision matmuls on
CPU are slow or missing). `trust_remote_code` is off unless the operator
passes `--trust-remote-code`, which it does only when the LocalLLM asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
Quantization = Literal["none", "4bit", "8bit"]
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu", "none")


class LoadOptionError(ValueError):
    """The options cannot work on this machine; the message says why."""


@dataclass(frozen=True)
class LoadOptions:
    device: Device = "auto"
    dtype: DType = "auto"
    device_map: str | None = None  # None: "auto" on a GPU, none on CPU
    quantization: Quantization = "none"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class LoadPlan:
    on_gpu: bool
    dtype: Literal["float16", "bfloat16", "float32"]
    device_map: str | None
    quantization: Quantization
    trust_remote_code: bool


def plan_load(options: LoadOptions, *, cuda_available: bool, bf16_supported: bool) -> LoadPlan:
    if options.device == "cuda" and not cuda_available:
        raise LoadOptionError("--device cuda was given but no CUDA device is visible")
    if options.device_map is not None and options.device_map not in DEVICE_MAPS:
        raise LoadOptionError(f"--device-map must be one of {', '.join(DEVICE_MAPS)}")
    on_gpu = options.device == "cuda" or (options.device == "auto" and cuda_available)
    if options.quantization != "none" and not on_gpu:
        raise LoadOptionError(f"--quantization {options.quantization} needs a CUDA GPU (bitsandbytes)")
    if options.dtype != "auto":
        dtype = options.dtype
    elif on_gpu:
        dtype = "bfloat16" if bf16_supported else "float16"
    else:
        dtype = "float32"
    device_map = options.device_map or ("auto" if on_gpu else None)
    if device_map == "none":
        device_map = None
    if options.quantization != "none" and device_map is None:
        device_map = "auto"  # bitsandbytes places the quantized weights itself
    return LoadPlan(on_gpu, dtype, device_map, options.quantization, options.trust_remote_code)


def from_pretrained_kwargs(plan: LoadPlan) -> dict[str, Any]:
    """The keyword arguments of `AutoModel*.from_pretrained` for a plan (imports torch)."""
    import torch

    dtype = getattr(torch, plan.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": plan.trust_remote_code}
    if plan.device_map is not None:
        kwargs["device_map"] = plan.device_map
    if plan.quantization != "none":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise LoadOptionError(
                "4/8-bit loading needs bitsandbytes: install the runtime-quant extra (pip install 'sdc-localllm[runtime-quant]')"
            ) from err
        import transformers

        bnb_config: Any = transformers.BitsAndBytesConfig

        if plan.quantization == "4bit":
            kwargs["quantization_config"] = bnb_config(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
            )
        else:
            kwargs["quantization_config"] = bnb_config(load_in_8bit=True)
    return kwargs
