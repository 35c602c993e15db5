"""Moved to api/completions.py (`/v1/completions`, `/v1/embeddings`); the checks stay importable from here."""

from sdc_orchestrator.api.completions import (
    COMPLETION_KEYS,
    EMBEDDING_KEYS,
    NO_TEXT_COMPLETIONS,
    PROVIDERS,
    check_completion,
    check_embeddings,
    json_body,
)

__all__ = [
    "COMPLETION_KEYS",
    "EMBEDDING_KEYS",
    "NO_TEXT_COMPLETIONS",
    "PROVIDERS",
    "check_completion",
    "check_embeddings",
    "json_body",
]
