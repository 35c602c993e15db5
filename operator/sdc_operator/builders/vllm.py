"""vLLM: the OpenAI-compatible server of the `vllm/vllm-openai` image.

Tensor parallelism follows the GPU count, NCCL gets a memory-backed /dev/shm,
and the startup probe allows 30 minutes of weight loading and CUDA graph
capture before liveness applies: a 70B model on a cold node takes that long.
The engine never reaches the hub (HF_HUB_OFFLINE): weights come from the cache.
"""

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


def vllm_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
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
    ]
    if spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.resources.gpus)]
    if spec.engine.max_model_len:
        args += ["--max-model-len", str(spec.engine.max_model_len)]
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    args += spec.engine.args
    container = {
        "name": "vllm",
        "image": spec.engine.image or settings.vllm_image,
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            *env_list(spec),
        ],
        "resources": engine_resources(spec, settings),
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "startupProbe": http_probe("/health", PORT, period=10, failures=180),
        "readinessProbe": http_probe("/health", PORT, period=5, failures=3),
        "livenessProbe": http_probe("/health", PORT, period=15, failures=4),
        "securityContext": container_security(),
    }
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}}
    return EngineParts(container, PORT, [hf_download_container(llm, settings)], [shm])
