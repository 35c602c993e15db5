"""Container resources: GPUs as an extended resource (requests == limits, as Kubernetes requires)."""

from __future__ import annotations

from typing import Any

from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec


def gpu_resource(spec: LocalLLMSpec, settings: OperatorSettings) -> str:
    return spec.resources.gpu_resource_name or settings.gpu_resource_name


def engine_resources(spec: LocalLLMSpec, settings: OperatorSettings) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.resources.cpu:
        requests["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        requests["memory"] = limits["memory"] = spec.resources.memory
    if spec.resources.gpus > 0:
        requests[gpu_resource(spec, settings)] = limits[gpu_resource(spec, settings)] = str(spec.resources.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out
