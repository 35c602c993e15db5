"""vLLM: `vllm serve <snapshot>` in the `vllm/vllm-openai` image, or on CPU (gpus: 0) in the CPU image.

The model is vllm serve's positional argument: `--model` crashes v0.11 under
`vllm serve` and is deprecated later. Tensor parallelism follows the GPU count,
NCCL gets a memory-backed /dev/shm, and the startup probe allows 30 minutes of
weight loading and CUDA graph capture before liveness applies: a 70B model on a
cold node takes that long. The engine never reaches the hub (HF_HUB_OFFLINE):
weights come from the cache. The pod runs as uid 1000, which has no passwd
entry in the image: USER and a writable TORCHINDUCTOR_CACHE_DIR keep torch's
user lookup and compile cache from failing. `make test` parses the command line
with vLLM's own argument parser at the default image's version
(tests/engines/test_vllm_args.py). With resources.gpus: 0 the pod runs the
operator's CPU vLLM image with the same command line, plus what vllm_cpu.py
derives from the spec (KV-cache size, threads).
"""

from __future__ import annotations

from sdc_operator.builders.common import LocalLLM, hf_model_dir, openai_server_container
from sdc_operator.builders.download import download_steps
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.quantization import quantization_args
from sdc_operator.builders.resources import engine_resources
from sdc_operator.builders.vllm_cpu import cpu_env
from sdc_operator.settings import OperatorSettings

PORT = 8000


def vllm_args(llm: LocalLLM) -> list[str]:
    """Arguments after `vllm serve`: the snapshot first, then the flags."""
    spec = llm.spec
    args = [hf_model_dir(spec), "--served-model-name", spec.served_name, "--host", "0.0.0.0", "--port", str(PORT)]
    if spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.resources.gpus)]
    if spec.engine.max_model_len:
        args += ["--max-model-len", str(spec.engine.max_model_len)]
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    args += quantization_args(spec)
    return [*args, *spec.engine.args]


def vllm_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    on_cpu = spec.resources.gpus == 0
    container = openai_server_container(
        "vllm",
        spec.engine.image or (settings.vllm_cpu_image if on_cpu else settings.vllm_image),
        vllm_args(llm),
        spec,
        engine_resources(spec, settings),
        port=PORT,
        startup_failures=180,  # 30 minutes
        command=["vllm", "serve"],
        extra_env=[
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "USER", "value": "vllm"},
            {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/tmp/torchinductor"},
            *(cpu_env(spec) if on_cpu else []),
        ],
        extra_mounts=[{"name": "dshm", "mountPath": "/dev/shm"}],
    )
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}}
    return EngineParts(container, PORT, download_steps(llm, settings), [shm])
