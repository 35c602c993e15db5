"""Table-driven tests of status derivation from observed children."""

from __future__ import annotations

from typing import Any

import pytest
from sdc_operator.status import Observed, derive_status

BOUND = {"status": {"phase": "Bound"}}


def pod(
    *, scheduled: bool | str = True, init: dict[str, Any] | None = None, main: dict[str, Any] | None = None
) -> dict[str, Any]:
    conds = []
    if scheduled is True:
        conds.append({"type": "PodScheduled", "status": "True"})
    elif scheduled:
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled})
    status: dict[str, Any] = {"conditions": conds, "phase": "Pending"}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "model-download", **init}]
    if main is not None:
        status["containerStatuses"] = [{"name": "vllm", **main}]
    return {"status": status}


def deploy(ready: int = 0, available: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True" if available else "False", "reason": "R"}],
        },
    }


DONE = {"state": {"terminated": {"exitCode": 0}}}
GPU_MSG = "0/3 nodes are available: 1 node(s) had untolerated taint, 2 Insufficient nvidia.com/gpu."


@pytest.mark.parametrize(
    ("case", "observed", "errors", "phase", "fragment"),
    [
        ("invalid spec", Observed(), ["resources.gpus=3: power of two"], "Failed", "power of two"),
        ("claim pending", Observed(claim={"status": {"phase": "Pending"}}), [], "Pending", "bind"),
        (
            "unschedulable",
            Observed(claim=BOUND, pods=[pod(scheduled=GPU_MSG)], deployment=deploy()),
            [],
            "Pending",
            "Insufficient nvidia.com/gpu",
        ),
        (
            "downloading",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[pod(init={"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})],
            ),
            [],
            "Downloading",
            "downloading",
        ),
        (
            "ollama: the url fetch refused the file",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[
                    {
                        "status": {
                            "phase": "Pending",
                            "conditions": [{"type": "PodScheduled", "status": "True"}],
                            "initContainerStatuses": [
                                {
                                    "name": "model-fetch",
                                    "state": {
                                        "terminated": {
                                            "exitCode": 2,
                                            "message": '{"event": "error", "message": "sha256 of u is x, expected y"}',
                                        }
                                    },
                                },
                                {"name": "model-download", "state": {"waiting": {"reason": "PodInitializing"}}},
                            ],
                        }
                    }
                ],
            ),
            [],
            "Failed",
            "sha256 of u",
        ),
        (
            "ollama: fetched, import running",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[
                    {
                        "status": {
                            "phase": "Pending",
                            "conditions": [{"type": "PodScheduled", "status": "True"}],
                            "initContainerStatuses": [
                                {"name": "model-fetch", **DONE},
                                {"name": "model-download", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
                            ],
                        }
                    }
                ],
            ),
            [],
            "Downloading",
            "downloading",
        ),
        (
            "download refused",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[
                    pod(
                        init={
                            "state": {
                                "terminated": {
                                    "exitCode": 2,
                                    "message": '{"event": "error", "message": "source x/y is not in the allow-list"}',
                                }
                            }
                        }
                    )
                ],
            ),
            [],
            "Failed",
            "allow-list",
        ),
        (
            "starting",
            Observed(
                claim=BOUND, deployment=deploy(), pods=[pod(init=DONE, main={"state": {"running": {}}, "ready": False})]
            ),
            [],
            "Starting",
            "loading",
        ),
        (
            "image pull failure",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[
                    pod(init=DONE, main={"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}})
                ],
            ),
            [],
            "Failed",
            "ImagePullBackOff",
        ),
        (
            "cuda out of memory",
            Observed(
                claim=BOUND,
                deployment=deploy(),
                pods=[
                    pod(
                        init=DONE,
                        main={
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {
                                "terminated": {
                                    "exitCode": 1,
                                    "message": "Loading safetensors checkpoint shards: 50%\n"
                                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB. "
                                    "GPU 0 has a total capacity of 22.05 GiB of which 101.12 MiB is free.\n"
                                    "[rank0]: process exited",
                                }
                            },
                        },
                    )
                ],
            ),
            [],
            "Failed",
            "ran out of GPU memory: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB",
        ),
        (
            "ready",
            Observed(claim=BOUND, deployment=deploy(ready=1, available=True), pods=[pod(init=DONE)]),
            [],
            "Ready",
            "1/1",
        ),
    ],
)
def test_phase(case: str, observed: Observed, errors: list[str], phase: str, fragment: str) -> None:
    status = derive_status(
        generation=2,
        desired_replicas=1,
        endpoint="http://m.ns.svc:8000/v1",
        served_name="m",
        observed=observed,
        spec_errors=errors,
        previous=[],
        now="2026-01-01T00:00:00Z",
    )
    got = (case, status.phase, fragment in status.message, status.endpoint is not None)
    assert got == (case, phase, True, phase == "Ready"), status.message
    assert all(c.observed_generation == 2 for c in status.conditions)


def test_transition_time_kept_while_status_holds() -> None:
    observed = Observed(claim=BOUND, deployment=deploy(ready=1, available=True), pods=[pod(init=DONE)])
    first = derive_status(
        generation=1,
        desired_replicas=1,
        endpoint="e",
        served_name="m",
        observed=observed,
        spec_errors=[],
        previous=[],
        now="T1",
    )
    again = derive_status(
        generation=1,
        desired_replicas=1,
        endpoint="e",
        served_name="m",
        observed=observed,
        spec_errors=[],
        previous=first.conditions,
        now="T2",
    )
    assert {c.last_transition_time for c in again.conditions} == {"T1"}
    changed = derive_status(
        generation=1,
        desired_replicas=1,
        endpoint="e",
        served_name="m",
        observed=Observed(claim=BOUND),
        spec_errors=[],
        previous=first.conditions,
        now="T3",
    )
    # Each condition by itself: those whose status flipped are stamped T3, those that held keep T1.
    stamps = {c.type: (c.status, c.last_transition_time) for c in changed.conditions}
    assert stamps["Ready"] == ("False", "T3")
    assert stamps["SpecValid"] == ("True", "T1") and stamps["CacheBound"] == ("True", "T1")


def test_gpu_out_of_memory_is_the_ready_conditions_reason() -> None:
    crashed = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {
            "terminated": {"exitCode": 1, "message": "ValueError: No available memory for the cache blocks."}
        },
    }
    status = derive_status(
        generation=2,
        desired_replicas=1,
        endpoint="http://m.ns.svc:8000/v1",
        served_name="m",
        observed=Observed(claim=BOUND, deployment=deploy(), pods=[pod(init=DONE, main=crashed)]),
        spec_errors=[],
        previous=[],
        now="2026-01-01T00:00:00Z",
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (status.phase, ready.reason) == ("Failed", "OutOfGPUMemory")
    assert "No available memory for the cache blocks" in ready.message


# -- the /scale subresource: status.replicas, status.selector, and why a model is at zero ------------------------


def _scaled(
    desired: int,
    observed: Observed,
    managers: tuple[str, ...] = (),
    selector: str | None = "llm.sdc.dev/owner=m",
    scale_to_zero: bool = False,
) -> Any:
    return derive_status(
        generation=3,
        desired_replicas=desired,
        endpoint="http://m.ns.svc:8000/v1",
        served_name="m",
        observed=observed,
        spec_errors=[],
        previous=[],
        now="T",
        selector=selector,
        replica_managers=managers,
        scale_to_zero=scale_to_zero,
    )


@pytest.mark.parametrize(
    ("case", "desired", "deployment_replicas", "managers", "autoscaled", "reason", "fragment"),
    [
        ("0 in a manifest: its manager", 0, 0, ("kubectl-client-side-apply",), True, "ZeroReplicas", "set by kubectl"),
        ("no owner, no autoscaling", 0, 0, (), False, "ZeroReplicas", "set by the user"),
        ("no owner, minReplicas 0: /scale after idle", 0, 0, (), True, "ScaledToZero", "after"),
        ("the autoscaler's name, if ever kept", 0, 0, ("sdc-autoscaler",), False, "ScaledToZero", "autoscaler"),
        ("still stopping: the pod is counted", 0, 1, (), True, "ScaledToZero", "idle"),
    ],
)
def test_at_zero_says_why(
    case: str,
    desired: int,
    deployment_replicas: int,
    managers: tuple[str, ...],
    autoscaled: bool,
    reason: str,
    fragment: str,
) -> None:
    dep = deploy()
    dep["status"]["replicas"] = deployment_replicas
    status = _scaled(desired, Observed(claim=BOUND, deployment=dep), managers, scale_to_zero=autoscaled)
    ready = next(c for c in status.conditions if c.type == "Ready")
    got = (case, status.phase, ready.status, ready.reason, fragment in status.message, status.replicas)
    assert got == (case, "Pending", "False", reason, True, deployment_replicas), status.message
    assert status.endpoint is None
    assert status.selector == "llm.sdc.dev/owner=m"


def test_status_replicas_count_existing_pods_not_the_wish() -> None:
    """status.replicas is the Deployment's status.replicas (what /scale reports as current), not spec.replicas."""
    dep = deploy(ready=1, available=True)
    dep["status"]["replicas"] = 2
    status = _scaled(3, Observed(claim=BOUND, deployment=dep, pods=[pod(init=DONE)]))
    assert (status.replicas, status.ready_replicas, status.phase) == (2, 1, "Degraded")
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert dumped["selector"] == "llm.sdc.dev/owner=m"
    assert "selector" not in _scaled(1, Observed(), selector=None).model_dump(by_alias=True, exclude_none=True)


def test_download_progress_is_in_the_status_while_downloading_only() -> None:
    from sdc_operator.download_progress import DownloadProgress

    progress = DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, 5)
    running = pod(init={"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
    done = pod(init=DONE)

    def status_of(observed: Observed) -> dict[str, Any]:
        return derive_status(
            generation=2,
            desired_replicas=1,
            endpoint="",
            served_name="m",
            observed=observed,
            spec_errors=[],
            previous=[],
            now="2026-01-01T00:00:00Z",
        ).model_dump(by_alias=True, exclude_none=True)

    downloading = status_of(Observed(claim=BOUND, deployment=deploy(), pods=[running], download=progress))
    assert downloading["phase"] == "Downloading"
    assert downloading["message"] == "downloading the model: 43.7 % (31.5 MB of 72.0 MB, 1 of 4 files), about 5 s left"
    assert downloading["download"] == {
        "bytesDone": 31_457_319,
        "bytesTotal": 72_000_039,
        "percent": 43.7,
        "filesDone": 1,
        "filesTotal": 4,
        "etaSeconds": 5,
    }
    # No progress line yet: the old message, no download field.
    started = status_of(Observed(claim=BOUND, deployment=deploy(), pods=[running]))
    assert started["phase"] == "Downloading" and "since" in started["message"] and "download" not in started
    # A stale reading after the download ended never shows.
    after = status_of(Observed(claim=BOUND, deployment=deploy(), pods=[done], download=progress))
    assert after["phase"] == "Starting" and "download" not in after
