"""Transformers: the project's own `sdc-runtime` on the cached snapshot (CPU or GPU)."""

from __future__ import annotations

from sdc_operator.builders.common import (
    MODEL_MOUNT,
    LocalLLM,
    container_security,
    env_list,
    hf_model_dir,
    http_probe,
)
from sdc_operator.builders.download import hf_download_container
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.resources import engine_resources
from sdc_operator.settings import OperatorSettings

PORT = 8000


def transformers_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    args = [
        "--model",
        hf_model_dir(spec),
        "--served-model-name",
        spec.served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        *spec.engine.args,
    ]
    container = {
        "name": "transformers",
        "image": spec.engine.image or settings.runtime_image,
        "command": ["sdc-runtime"],
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HOME", "value": "/tmp"}, *env_list(spec)],
        "resources": engine_resources(spec, settings),
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "startupProbe": http_probe("/health", PORT, period=10, failures=90),
        "readinessProbe": http_probe("/health", PORT, period=5, failures=3),
        "livenessProbe": http_probe("/health", PORT, period=15, failures=4),
        "securityContext": container_security(),
    }
    return EngineParts(container, PORT, [hf_download_container(llm, settings)])
