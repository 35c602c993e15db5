"""Decide which children to (re)apply: a pure comparison of spec hashes.

Algorithm: for each desired object, look up the observed object of the same
kind and name; apply it when it is missing or its `spec-hash` annotation
differs from the desired one. Objects that match are left alone, so an idle
operator makes no writes. Server-side apply makes every action idempotent, so
a plan computed from a stale snapshot is safe: the worst case is a no-op write.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from sdc_operator.builders.common import SPEC_HASH
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec


@dataclass(frozen=True)
class Apply:
    obj: dict[str, Any]
    reason: str  # "missing" or "changed"

    @property
    def key(self) -> tuple[str, str]:
        return self.obj["kind"], self.obj["metadata"]["name"]


def plan(desired: list[dict[str, Any]], observed: dict[tuple[str, str], dict[str, Any]]) -> list[Apply]:
    actions = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        current = observed.get(key)
        if current is None:
            actions.append(Apply(obj, "missing"))
            continue
        have = (current.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH)
        if have != obj["metadata"]["annotations"][SPEC_HASH]:
            actions.append(Apply(obj, "changed"))
    return actions


def source_errors(spec: LocalLLMSpec, settings: OperatorSettings) -> list[str]:
    """The operator's allow-list of model sources, checked before anything is created."""
    allowed = settings.allowed_ollama_models if spec.runtime == "ollama" else settings.allowed_sources
    if any(fnmatch.fnmatchcase(spec.model.name, pattern) for pattern in allowed):
        return []
    return [f"model.name: '{spec.model.name}' is not an allowed source (operator allow-list: {', '.join(allowed)})"]
