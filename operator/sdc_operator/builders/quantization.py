"""Quantized weights per runtime: the engine flags a typed `engine.quantization` becomes.

Each engine spells quantization its own way, so the spec names the format
once and this module turns it into the engine's flag: vLLM's
`--quantization awq|gptq|fp8|bitsandbytes`; sdc-runtime's
`--quantization 4bit|8bit` for the spec's int4|int8 (bitsandbytes, loaded at start on the GPU). For
Ollama the quantization is part of the tag (gemma2:9b-instruct-q8_0), so
there is no flag: the spec's rules only check that the tag says the same.
Which formats each runtime accepts is validated by CEL and `spec.quantization_errors`.
"""

from __future__ import annotations

from sdc_operator.spec import LocalLLMSpec


def quantization_args(spec: LocalLLMSpec) -> list[str]:
    quant = spec.engine.quantization
    if quant is None or spec.runtime == "ollama":
        return []
    if spec.runtime == "transformers":
        return ["--quantization", _RUNTIME_BITS[quant]]
    return ["--quantization", quant]


# sdc-runtime's own spelling of the spec's bitsandbytes formats.
_RUNTIME_BITS = {"int4": "4bit", "int8": "8bit"}
