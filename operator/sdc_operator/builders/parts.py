"""What a runtime contributes to the pod: its container, init containers, sidecars, volumes, port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EngineParts:
    container: dict[str, Any]
    port: int
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    # Containers beside the engine (Ollama's metrics proxy); the engine's container stays the first.
    sidecars: list[dict[str, Any]] = field(default_factory=list)
