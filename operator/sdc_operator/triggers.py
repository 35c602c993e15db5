"""Which observations call for work: a new spec to reconcile, a phase change worth an Event.

Pure functions over what a watch event shows and what this process last handled.
"""

from __future__ import annotations

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
