"""vLLM: the OpenAI-compatible server of the `vllm/vllm-openai` image.

Tensor parallelism follows the GPU count, NCCL gets a memory-backed /dev/shm,
and the startup probe allows 30 minutes of weight loading and CUDA graph
capture before liveness applies: a 70B model on a cold node takes that long.
The engine never reaches the hub (HF_HUB_OFFLINE): weights come from the cache.
"""

from __future__ import annotations

from sdc_operator.builders.common import LocalLLM, openai_server_container, served_args
from sdc_operator.builders.download import download_steps
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.quantization import quantization_args
from sdc_operator.builders.resources import engine_resources
from sdc_operator.settings import OperatorSettings

PORT = 8000


def vllm_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    args = served_args(spec, PORT)
    if spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.resources.gpus)]
    if spec.engine.max_model_len:
        args += ["--max-model-len", str(spec.engine.max_model_len)]
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    args += quantization_args(spec)
    container = openai_server_container(
        "vllm",
        spec.engine.image or settings.vllm_image,
        [*args, *spec.engine.args],
        spec,
        engine_resources(spec, settings),
        port=PORT,
        startup_failures=180,  # 30 minutes
        extra_env=[{"name": "VLLM_NO_USAGE_STATS", "value": "1"}],
        extra_mounts=[{"name": "dshm", "mountPath": "/dev/shm"}],
    )
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}}
    return EngineParts(container, PORT, download_steps(llm, settings), [shm])
