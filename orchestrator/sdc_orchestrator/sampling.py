"""The migration guide's generation settings, applied where a request leaves them out.

The seed generated with temperature 0.3, top_p 0.8 and at most 2048 new tokens
(and Ollama's num_ctx 8192, which the operator sets on the engine). Backends
have their own, different defaults (sdc-runtime: 1.0, 1.0, 256 tokens), so a
request that omits them would change behaviour on the way off the seed. The
orchestrator therefore fills in LLM_TEMPERATURE, LLM_TOP_P and LLM_MAX_TOKENS;
whatever the caller sent wins. An OpenAI client's `max_completion_tokens`
counts as a token limit too, so it is never doubled up with `max_tokens`.
"""

from __future__ import annotations

from typing import Any

from sdc_orchestrator.settings import OrchestratorSettings

# LLM_MODEL_NAME's default in the guide: used when a backend does not name its model.
DEFAULT_MODEL_NAME = "gemma-2-9b-it"


def with_defaults(payload: dict[str, Any], settings: OrchestratorSettings) -> dict[str, Any]:
    """A copy of an OpenAI chat payload with the guide's sampling filled in where absent (or null)."""
    out = dict(payload)
    if out.get("temperature") is None:
        out["temperature"] = settings.llm_temperature
    if out.get("top_p") is None:
        out["top_p"] = settings.llm_top_p
    if out.get("max_tokens") is None and out.get("max_completion_tokens") is None:
        out["max_tokens"] = min(settings.llm_max_tokens, settings.sdc_max_tokens)  # never past the gateway's limit
    return out


def model_used(provider: str, model: str) -> str:
    """The seed's `model_used`: f"{service_type}:{model_name}", e.g. "ollama:gemma2:9b"."""
    return f"{provider}:{model}"
