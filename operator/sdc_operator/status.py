"""Derive a LocalLLM's status from what the cluster reports about its children.

Pure: observed objects in, `LocalLLMStatus` out. Every check yields a
(reason, message) pair and the first blocking one decides the phase, in the
order a model comes to life: spec valid -> cache bound -> pods scheduled ->
model downloaded -> engine started -> replicas ready. Messages quote the
cluster's own words (the scheduler's "0/3 nodes are available: 3 Insufficient
nvidia.com/gpu", a container's termination message), because those are what
a person can act on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sdc_operator.builders.download import DOWNLOAD_CONTAINER
from sdc_operator.builders.ollama import FETCH_CONTAINER
from sdc_operator.download_progress import DownloadProgress, describe
from sdc_operator.spec import (
    AUTOSCALER_MANAGER,
    SERVING_PHASES,
    Condition,
    DownloadStatus,
    LocalLLMStatus,
    Phase,
)

# Waiting reasons of a container that will not fix themselves.
STUCK_REASONS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}
CONDITION_TYPES = ("SpecValid", "Fits", "CacheBound", "Scheduled", "ModelCached", "Available", "Ready")


@dataclass(frozen=True)
class Observed:
    deployment: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    claim: dict[str, Any] | None = None
    claim_expected: bool = True
    download: DownloadProgress | None = None  # the download step's newest progress line, while it runs


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not known yet
    reason: str
    message: str = ""


def _container_statuses(pod: dict[str, Any], init: bool) -> list[dict[str, Any]]:
    key = "initContainerStatuses" if init else "containerStatuses"
    return list(pod.get("status", {}).get(key) or [])


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _termination_message(state: dict[str, Any]) -> str:
    message = str(state.get("message") or state.get("reason") or "")
    try:  # sdc-fetch-model writes a JSON line
        parsed = json.loads(message.strip().splitlines()[-1])
        return str(parsed.get("message", message))
    except (ValueError, IndexError, AttributeError):
        return message.strip()[-300:]


def check_claim(observed: Observed) -> Check:
    if not observed.claim_expected:
        return Check(True, "ExistingClaim", "using an existing claim")
    if observed.claim is None:
        return Check(None, "ClaimMissing", "the model cache claim is being created")
    phase = observed.claim.get("status", {}).get("phase")
    if phase == "Bound":
        return Check(True, "Bound", "the model cache volume is bound")
    if phase == "Lost":
        return Check(False, "ClaimLost", "the model cache volume was lost")
    return Check(None, "ClaimPending", "waiting for the model cache volume to bind (storage class, capacity)")


def check_scheduled(observed: Observed) -> Check:
    if not observed.pods:
        return Check(None, "NoPods", "no pods yet")
    for pod in observed.pods:
        cond = _condition(pod, "PodScheduled")
        if cond and cond.get("status") == "False":
            return Check(False, str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or ""))
    if all((_condition(p, "PodScheduled") or {}).get("status") == "True" for p in observed.pods):
        return Check(True, "Scheduled", "all pods are placed on nodes")
    return Check(None, "Scheduling", "pods are waiting for the scheduler")


def check_download(observed: Observed) -> Check:
    """ModelCached: some pod finished its download init container."""
    running_since = None
    failure = None
    for pod in observed.pods:
        for status in _container_statuses(pod, init=True):
            if status.get("name") not in (FETCH_CONTAINER, DOWNLOAD_CONTAINER):
                continue
            state = status.get("state", {})
            last = status.get("lastState", {}).get("terminated")
            if state.get("terminated", {}).get("exitCode") == 0:
                if status.get("name") == FETCH_CONTAINER:
                    continue  # Ollama's import from model.url still follows
                return Check(True, "Downloaded", "the model is in the cache")
            if "terminated" in state:
                failure = _termination_message(state["terminated"])
            elif last and last.get("exitCode", 0) != 0:
                failure = _termination_message(last)
            elif "running" in state:
                running_since = state["running"].get("startedAt", "")
            waiting = state.get("waiting", {})
            if waiting.get("reason") in STUCK_REASONS - {"CrashLoopBackOff"}:
                return Check(False, str(waiting["reason"]), str(waiting.get("message") or waiting["reason"]))
        if pod.get("status", {}).get("phase") == "Running" and not _container_statuses(pod, init=True):
            return Check(True, "Downloaded", "the model is in the cache")
    if failure is not None:
        return Check(False, "DownloadFailed", failure)
    if running_since is not None:
        if observed.download is not None:
            return Check(None, "Downloading", describe(observed.download))
        return Check(None, "Downloading", f"downloading the model (since {running_since})")
    return Check(None, "NotStarted", "the download has not started")


# What torch, vLLM and llama.cpp print when the weights or the KV cache do not fit the GPU.
_GPU_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory|cudaMalloc failed|"
    r"No available memory for the cache blocks|larger than the available KV cache memory",
    re.IGNORECASE,
)


def gpu_out_of_memory(log_tail: str) -> str | None:
    """The line of an engine's last words that says the GPU ran out of memory, if one does."""
    for line in reversed(log_tail.splitlines()):
        if _GPU_OOM.search(line):
            return line.strip()[:300]
    return None


def check_engine(observed: Observed) -> Check:
    for pod in observed.pods:
        for status in _container_statuses(pod, init=False):
            waiting = status.get("state", {}).get("waiting", {})
            if waiting.get("reason") in STUCK_REASONS:
                last = status.get("lastState", {}).get("terminated")
                # Engine containers end their log into the termination message (FallbackToLogsOnError):
                # a CUDA out-of-memory there says why the pod crash-loops, and what to change.
                oom = gpu_out_of_memory(str(last.get("message") or "")) if last else None
                if oom:
                    return Check(
                        False,
                        "OutOfGPUMemory",
                        f"container {status.get('name')} ran out of GPU memory: {oom}. Give it more GPUs "
                        "(resources.gpus), a larger GPU, a quantized model or a shorter engine.maxModelLen",
                    )
                detail = _termination_message(last) if last else str(waiting.get("message") or "")
                return Check(
                    False,
                    str(waiting["reason"]),
                    f"container {status.get('name')}: {waiting['reason']}" + (f": {detail}" if detail else ""),
                )
    return Check(None, "Starting", "the engine is loading the model")


def at_zero(replica_managers: list[str] | tuple[str, ...] = (), scale_to_zero: bool = False) -> tuple[str, str]:
    """Why a LocalLLM has spec.replicas 0, as (reason, message), from the field managers of spec.replicas.

    A 0 written through /scale (the orchestrator after idle, `kubectl scale`, an HPA or KEDA) leaves no owner:
    a Scale omits replicas 0 (autoscaling/v1 `omitempty`), so the API server drops that write's managed
    field (seen on v1.35). A 0 in the object itself (a manifest, `kubectl edit`) keeps its manager's name.
    With autoscaling.minReplicas 0 an unowned 0 is the autoscaler's scale to zero after idle.
    """
    owners = [m for m in replica_managers if m != AUTOSCALER_MANAGER]
    if AUTOSCALER_MANAGER in replica_managers or (scale_to_zero and not owners):
        return (
            "ScaledToZero",
            "scaled to zero through /scale (the autoscaler after autoscaling.scaleDownDelaySeconds idle, or "
            "`kubectl scale`); the next request is held while one replica starts",
        )
    if owners:
        return "ZeroReplicas", f"at zero: spec.replicas is 0 (set by {', '.join(owners)})"
    return "ZeroReplicas", "at zero: spec.replicas is 0 (set by the user); `kubectl scale llm NAME --replicas=1`"


def _ready_replicas(dep: dict[str, Any] | None) -> int:
    return int((dep or {}).get("status", {}).get("readyReplicas") or 0)


def check_available(dep: dict[str, Any] | None) -> Check:
    """The Deployment's own Available condition, as it reports it."""
    available = _condition(dep, "Available")
    if available is None:
        return Check(None, "NoDeployment", "the deployment is being created")
    return Check(
        available.get("status") == "True",
        str(available.get("reason") or "Unknown"),
        str(available.get("message") or ""),
    )


def _serving_phase(checks: dict[str, Check], engine: Check, observed: Observed, desired: int) -> tuple[Phase, str]:
    """The phase and message of a valid LocalLLM asked for `desired` (> 0) replicas: the first that applies,
    from a refused cache or schedule through a full rollout to the steps on the way."""
    dep = observed.deployment
    ready = _ready_replicas(dep)
    rolled_out = dep is not None and int(dep.get("status", {}).get("observedGeneration") or 0) >= int(
        dep.get("metadata", {}).get("generation") or 0
    )
    updated = int((dep or {}).get("status", {}).get("updatedReplicas") or 0)
    if checks["CacheBound"].ok is False:
        return "Failed", checks["CacheBound"].message
    if checks["Scheduled"].ok is False:
        return "Pending", f"cannot schedule: {checks['Scheduled'].message}"
    if ready >= desired and rolled_out and updated >= desired:
        return "Ready", f"{ready}/{desired} replicas ready"
    if checks["ModelCached"].ok is False:
        return "Failed", f"model download failed: {checks['ModelCached'].message}"
    if engine.ok is False:
        return ("Degraded" if ready else "Failed"), engine.message
    if ready > 0:
        return "Degraded", f"{ready}/{desired} replicas ready; rolling out"
    if checks["ModelCached"].reason == "Downloading":
        return "Downloading", checks["ModelCached"].message
    if checks["ModelCached"].ok:
        return "Starting", "model cached; the engine is loading it"
    if checks["CacheBound"].ok is None:
        return "Pending", checks["CacheBound"].message
    return "Pending", checks["Scheduled"].message if observed.pods else "creating the deployment"


def derive_status(
    *,
    generation: int,
    desired_replicas: int,
    endpoint: str,
    served_name: str,
    observed: Observed,
    spec_errors: list[str],
    previous: list[Condition],
    now: str,
    conflicts: tuple[str, ...] | list[str] = (),
    fit: Check | None = None,
    selector: str | None = None,
    replica_managers: list[str] | tuple[str, ...] = (),
    scale_to_zero: bool = False,
) -> LocalLLMStatus:
    """`fit`: the GPU memory estimate (fit.py); False adds a warning, it never changes the phase.

    `selector`: the pods' label selector (status.selector, read by /scale); `replica_managers`: the field
    managers of the LocalLLM's spec.replicas and `scale_to_zero` (autoscaling.minReplicas is 0), which say who
    put a model at zero (`at_zero`).
    status.replicas is the Deployment's status.replicas (pods that exist, ready or not), as a Deployment's own
    /scale reports it: an HPA compares it with the desired count, and it is 0 only once the pods are gone.
    """
    checks: dict[str, Check] = {}
    phase: Phase
    message: str
    ready = _ready_replicas(observed.deployment)
    current = int((observed.deployment or {}).get("status", {}).get("replicas") or 0)
    if spec_errors:
        checks["SpecValid"] = Check(False, "InvalidSpec", "; ".join(spec_errors))
        phase, message = "Failed", "fix the spec: " + "; ".join(spec_errors)
        return _assemble(phase, message, checks, generation, 0, 0, None, served_name, previous, now, selector)
    checks["SpecValid"] = Check(True, "Valid", "the spec is valid")
    if conflicts:
        # Another object holds a child's name: it is never changed; the LocalLLM waits for the name.
        message = (
            f"name taken: {', '.join(conflicts)} exists and is not owned by this LocalLLM; "
            "delete or rename it (or rename the LocalLLM)"
        )
        checks["Ready"] = Check(False, "NameConflict", message)
        return _assemble("Failed", message, checks, generation, 0, 0, None, served_name, previous, now, selector)
    checks["CacheBound"] = check_claim(observed)
    checks["Scheduled"] = check_scheduled(observed)
    checks["ModelCached"] = check_download(observed)
    checks["Available"] = check_available(observed.deployment)
    engine = check_engine(observed)
    zero_reason = ""
    if desired_replicas == 0:
        zero_reason, message = at_zero(replica_managers, scale_to_zero)
        phase = "Pending"
    else:
        phase, message = _serving_phase(checks, engine, observed, desired_replicas)
    if fit is not None:
        checks["Fits"] = fit
        if fit.ok is False and phase not in ("Ready", "Failed"):
            message = f"may not fit: {fit.message}; {message}"
    # A GPU out of memory is named in the Ready condition's reason, so alerts and `kubectl wait` can tell it.
    oom = phase in ("Failed", "Degraded") and engine.reason == "OutOfGPUMemory" and message == engine.message
    checks["Ready"] = Check(phase == "Ready", engine.reason if oom else (zero_reason or phase), message)
    status = _assemble(
        phase,
        message,
        checks,
        generation,
        current,
        ready,
        endpoint if phase in SERVING_PHASES else None,
        served_name,
        previous,
        now,
        selector,
    )
    if phase == "Downloading" and observed.download is not None:
        status = status.model_copy(update={"download": download_status(observed.download)})
    return status


def download_status(progress: DownloadProgress) -> DownloadStatus:
    return DownloadStatus(
        bytes_done=progress.bytes_done,
        bytes_total=progress.bytes_total,
        percent=progress.percent,
        files_done=progress.files_done,
        files_total=progress.files_total,
        eta_seconds=progress.eta_seconds,
    )


def _assemble(
    phase: Phase,
    message: str,
    checks: dict[str, Check],
    generation: int,
    replicas: int,
    ready: int,
    endpoint: str | None,
    served_name: str,
    previous: list[Condition],
    now: str,
    selector: str | None = None,
) -> LocalLLMStatus:
    before = {c.type: c for c in previous}
    conditions = []
    for kind in CONDITION_TYPES:
        if kind not in checks:
            continue
        check = checks[kind]
        status = "Unknown" if check.ok is None else ("True" if check.ok else "False")
        old = before.get(kind)
        since = old.last_transition_time if old is not None and old.status == status else now
        conditions.append(
            Condition(
                type=kind,
                status=status,
                reason=check.reason,
                message=check.message[:1000],
                observed_generation=generation,
                last_transition_time=since,
            )
        )
    return LocalLLMStatus(
        phase=phase,
        message=message[:1000],
        endpoint=endpoint,
        served_model_name=served_name,
        replicas=replicas,
        ready_replicas=ready,
        selector=selector,
        observed_generation=generation,
        conditions=conditions,
    )


def status_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes `current` exactly `new` (None: nothing to write).

    A merge patch only adds and replaces: keys the new status lacks (an endpoint
    that no longer serves, a field of an older version) are sent as null so the
    stored status never keeps a stale value.
    """
    if current == new:
        return None
    patch: dict[str, Any] = {k: None for k in current if k not in new}
    patch.update({k: v for k, v in new.items() if current.get(k) != v})
    return patch
