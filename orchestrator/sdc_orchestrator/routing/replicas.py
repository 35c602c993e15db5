"""Replica sets: the published entries that serve one model, so that routing can choose in two steps.

The operator publishes one entry per ready pod; entries that share
(namespace, pool, model) are replicas of one model (DESIGN.md), and of one
runtime: a provider is chosen before a replica (`provider: vllm`, the
migration split between runtimes), so a vLLM and an Ollama LocalLLM of the
same model are two sets, each split by its weight. Weights and
the migration split (`auto`, Gemini, a user kept on one model) choose among
sets, as they chose among endpoints before; the replica policy then chooses
the pod inside the set by its engine's state. Seed endpoints (the env
variables, Gemini) and entries without a model are sets of one, named as the
endpoint, so routing among them is exactly what it was.

A set's weight is the sum of its LocalLLMs' weights, each LocalLLM counted
once however many pods it has: scaling a LocalLLM out gives it capacity, not
a bigger share of the split. Old documents (one entry per LocalLLM, its
Service URL) make sets of one entry per LocalLLM and keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdc_orchestrator.backends import Endpoint


def set_key(endpoint: Endpoint) -> str:
    if endpoint.namespace is not None and endpoint.model:
        return f"{endpoint.provider}:{endpoint.namespace}/{endpoint.pool or ''}/{endpoint.model}"
    return endpoint.name


@dataclass(frozen=True)
class ReplicaSet:
    key: str
    replicas: tuple[Endpoint, ...]

    @property
    def name(self) -> str:  # sticky.py's Weighted protocol: a user is kept on a set, i.e. on one model
        return self.key

    @property
    def weight(self) -> int:
        per_origin = {e.origin or e.name: e.weight for e in self.replicas}
        return sum(per_origin.values())

    def origins(self) -> dict[str, list[Endpoint]]:
        out: dict[str, list[Endpoint]] = {}
        for e in self.replicas:
            out.setdefault(e.origin or e.name, []).append(e)
        return out


def group(endpoints: Sequence[Endpoint]) -> list[ReplicaSet]:
    """Sets in the order their first entry appears."""
    by_key: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by_key.setdefault(set_key(e), []).append(e)
    return [ReplicaSet(key, tuple(members)) for key, members in by_key.items()]
