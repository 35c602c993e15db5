"""Which observations call for work: a new spec to reconcile, a phase change worth an Event, a model's first
ready replica that cannot wait for the coalesced writes.

Pure functions over what a watch event shows and what this process last handled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdc_operator.spec import SERVING_PHASES

EVENT_PHASES = ("Ready", "Failed", "Degraded")


def event_due(phase: str, last: str | None) -> bool:
    """Whether a phase change is worth a core/v1 Event (what `kubectl describe llm` lists).

    Outcomes only (Ready, Failed, Degraded), not the steps toward them (Pending, Downloading,
    Starting) that the status message already shows: an Event is a write, and hundreds of models
    coming up at once would each write one per step.
    """
    return phase != last and phase in EVENT_PHASES


def spec_pending(handled: tuple[str, int] | None, uid: str, generation: int) -> bool:
    """Whether a LocalLLM event asks for its children to be reconciled: this process has not yet
    handled this object's spec (`handled` is the uid and generation it last reconciled successfully).

    Every spec change bumps metadata.generation and nothing else does (status, labels,
    annotations), so no copy of the spec is stored on the object: the first event after a start
    reconciles each object once (a converged one plans no writes), later ones only on a new spec.
    """
    return handled != (uid, generation)


def _ready_count(status: Mapping[str, Any] | None) -> int:
    try:
        return int((status or {}).get("readyReplicas") or 0)
    except (TypeError, ValueError):
        return 0


def first_replica_ready(shown: Mapping[str, Any] | None, deployment_ready: int, pod_ready: bool = True) -> bool:
    """Whether a Deployment or Pod event brings a LocalLLM its first ready replica: the status this process
    last computed (else the one the object shows) counts none ready, the Deployment now counts one or more,
    and the pod index already shows a Ready pod. The two watches deliver in either order: a status written
    from the Deployment's count alone would describe a pod whose Ready event has not arrived (its download
    step still running: ModelCached Unknown beside phase Ready), so the later of the two events fires it.

    Such a status is written at once, not after the coalescing delay and the per-model interval: requests
    held for a model at zero wait on exactly this change (scale from zero), and it happens once per wake,
    so skipping the wait costs no extra writes. Every other change keeps the coalescing.
    """
    return deployment_ready > 0 and pod_ready and _ready_count(shown) == 0


def serving_began(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether a status write makes a LocalLLM publishable (listed under `endpoints`) that was not: it moved
    into a serving phase with an endpoint. The endpoints document is then written at once, without the
    coalescing delay; a model already serving, or one that stops, waits for the next coalesced write."""

    def serving(status: Mapping[str, Any] | None) -> bool:
        status = status or {}
        return status.get("phase") in SERVING_PHASES and bool(status.get("endpoint"))

    return serving(after) and not serving(before)
