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
    container = openai_server_container(
        "transformers",
        spec.engine.image or settings.runtime_image,
        [*served_args(spec, PORT), *quantization_args(spec), *spec.engine.args],
        spec,
        engine_resources(spec, settings),
        port=PORT,
        startup_failures=90,  # 15 minutes
        command=["sdc-runtime"],
    )
    return EngineParts(container, PORT, download_steps(llm, settings))
