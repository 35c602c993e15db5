"""Transformers: the project's own `sdc-runtime` on the cached snapshot (CPU or GPU)."""

from __future__ import annotations

from sdc_operator.builders.common import LocalLLM, openai_server_container, served_args
from sdc_operator.builders.download import download_steps
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.quantization import quantization_args
from sdc_operator.builders.resources import engine_resources
from sdc_operator.settings import OperatorSettings

PORT = 8000


def transformers_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    # sdc-runtime keeps remote code off unless told; the operator says so only for an allowed repo.
    remote_code = ["--trust-remote-code"] if spec.model.trust_remote_code else []
    # engine.maxModelLen: sdc-runtime serves (and reports in /v1/models) the shorter context, like vLLM.
    context = ["--max-model-len", str(spec.engine.max_model_len)] if spec.engine.max_model_len else []
    container = openai_server_container(
        "transformers",
        spec.engine.image or settings.runtime_image,
        [*served_args(spec, PORT), *quantization_args(spec), *remote_code, *context, *spec.engine.args],
        spec,
        engine_resources(spec, settings),
        port=PORT,
        startup_failures=90,  # 15 minutes
        command=["sdc-runtime"],
    )
    return EngineParts(container, PORT, download_steps(llm, settings))
