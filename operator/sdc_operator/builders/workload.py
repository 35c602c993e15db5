"""The Deployment that serves a LocalLLM, and the full set of desired children.

Per-runtime modules give the container; this module wraps it in a pod with
the cache volume, scheduling, hardened security and GPU toleration, and a
spec-hash annotation so the planner can tell drift without a deep diff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdc_operator.builders import ollama, transformers, vllm
from sdc_operator.builders.cache import cache_claim
from sdc_operator.builders.common import (
    MODEL_HASH,
    SPEC_HASH,
    LocalLLM,
    cache_claim_name,
    metadata,
    model_identity,
    pod_security,
    resource_name,
    selector,
    stable_hash,
)
from sdc_operator.builders.network_policy import network_policy
from sdc_operator.builders.observability import pod_metadata
from sdc_operator.builders.ollama import ollama_parts
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.service import service
from sdc_operator.builders.transformers import transformers_parts
from sdc_operator.builders.vllm import vllm_parts
from sdc_operator.settings import OperatorSettings

# Drain on scale-down (#24): when a pod is deleted (scale-down, rollout), the kubelet first runs the preStop
# hook and only then sends SIGTERM. For settings.engine_drain_seconds (10 by default) the engine keeps
# serving while the pod, now terminating, leaves the Service's endpoints (kube-proxy) and the operator's
# published replicas (publish.pod_ready excludes a pod with a deletionTimestamp; the orchestrator follows the
# ConfigMap through its watch within about a second), so no new request goes to an engine that has stopped
# listening. SIGTERM then stops the engine's HTTP server gracefully (uvicorn: no new connections, in-flight
# requests finish); the grace period leaves IN_FLIGHT_SECONDS beyond the pause for the requests still
# running before SIGKILL. The `sleep` action is the kubelet's own (GA in v1.34, on by default since v1.30):
# no shell needed in the engine image.
IN_FLIGHT_SECONDS = 60


def drain_on_stop(container: dict[str, Any], seconds: int) -> dict[str, Any]:
    """A serving container with its preStop pause (none when `seconds` is 0)."""
    if seconds <= 0 or "lifecycle" in container:
        return container
    return {**container, "lifecycle": {"preStop": {"sleep": {"seconds": seconds}}}}


@dataclass(frozen=True)
class RuntimeEntry:
    """One serving runtime: how to build its pod parts, and the port it serves on."""

    parts: Callable[[LocalLLM, OperatorSettings], EngineParts]
    port: int


# The one registry of runtimes: a new runtime is a builder module and one entry here
# (plus its name in spec.Runtime, the CRD's enum).
ENGINES: dict[str, RuntimeEntry] = {
    "vllm": RuntimeEntry(vllm_parts, vllm.PORT),
    "ollama": RuntimeEntry(ollama_parts, ollama.PORT),
    "transformers": RuntimeEntry(transformers_parts, transformers.PORT),
}


def engine_port(runtime: str) -> int:
    """The port a runtime serves on, without building its pod (status needs only this)."""
    return ENGINES[runtime].port


def engine_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    return ENGINES[llm.spec.runtime].parts(llm, settings)


def tolerations(llm: LocalLLM, settings: OperatorSettings) -> list[dict[str, Any]]:
    out = [t.model_dump(by_alias=True, exclude_none=True) for t in llm.spec.scheduling.tolerations]
    if llm.spec.resources.gpus > 0 and not any(t.get("key") == settings.gpu_toleration_key for t in out):
        out.append({"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"})
    return out


def model_claim(llm: LocalLLM) -> dict[str, Any]:
    """The /models volume; read-only when it is the user's model (model.source), never written by us."""
    claim: dict[str, Any] = {"claimName": cache_claim_name(llm)}
    if llm.spec.model.source is not None:
        claim["readOnly"] = True
    return claim


def deployment(llm: LocalLLM, settings: OperatorSettings) -> dict[str, Any]:
    spec = llm.spec
    parts = engine_parts(llm, settings)
    sched = spec.scheduling
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": parts.init_containers,
        # The pause on every serving container: Ollama's exporter sidecar takes its traffic, so it must
        # outlive the unpublishing as the engine does.
        "containers": [drain_on_stop(c, settings.engine_drain_seconds) for c in (parts.container, *parts.sidecars)],
        "volumes": [
            {"name": "model-cache", "persistentVolumeClaim": model_claim(llm)},
            {"name": "tmp", "emptyDir": {}},
            *parts.volumes,
        ],
        "terminationGracePeriodSeconds": settings.engine_drain_seconds + IN_FLIGHT_SECONDS,
    }
    if sched.node_selector:
        pod["nodeSelector"] = dict(sched.node_selector)
    if tol := tolerations(llm, settings):
        pod["tolerations"] = tol
    if sched.affinity:
        pod["affinity"] = sched.affinity
    if sched.runtime_class_name:
        pod["runtimeClassName"] = sched.runtime_class_name
    if sched.priority_class_name:
        pod["priorityClassName"] = sched.priority_class_name
    # A ReadWriteOnce cache cannot be mounted by an old and a new pod on two nodes.
    strategy = (
        {"type": "Recreate"}
        if spec.cache.access_mode == "ReadWriteOnce"
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **metadata(llm, resource_name(llm)),
            "annotations": {MODEL_HASH: stable_hash(model_identity(spec))},
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(llm)},
            "strategy": strategy,
            "template": {"metadata": pod_metadata(llm, parts.port), "spec": pod},
        },
    }


def desired_children(llm: LocalLLM, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Every object the LocalLLM should own, each stamped with the hash of its own content."""
    parts = engine_parts(llm, settings)
    # The policy first: the engine's pods never run before their ingress is closed.
    policy = network_policy(llm, parts.port, settings.engine_network_policy)
    objects = [obj for obj in (policy, cache_claim(llm), deployment(llm, settings), service(llm, parts.port)) if obj]
    for obj in objects:
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations[SPEC_HASH] = stable_hash(
            {k: v for k, v in obj.items() if k != "metadata"}
            | {"labels": obj["metadata"].get("labels"), "owners": obj["metadata"].get("ownerReferences")}
        )
    return objects
