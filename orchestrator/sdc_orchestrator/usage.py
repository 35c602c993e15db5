"""Token accounting from the backends' OpenAI `usage`, for answers and for streams alike.

`sdc_orchestrator_tokens_total{direction}` counts `in` (prompt), `out` (completion) and `cached` (the part of `in`
served from the engine's prefix cache, `usage.prompt_tokens_details.cached_tokens`, where the
backend reports it: vLLM with --enable-prompt-tokens-details, Gemini). A stream reports its usage only
when asked (`stream_options.include_usage`): the orchestrator always asks its backend, counts the final
usage chunk, and passes that chunk on only to a client that asked for it, so a client that did not
sees the stream it expects (no chunk with an empty `choices`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sdc_orchestrator import metrics


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def count(provider: str, usage: object) -> None:
    if not isinstance(usage, Mapping):
        return
    metrics.TOKENS.labels(provider, "in").inc(_count(usage.get("prompt_tokens")))
    metrics.TOKENS.labels(provider, "out").inc(_count(usage.get("completion_tokens")))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping) and _count(details.get("cached_tokens")):
        metrics.TOKENS.labels(provider, "cached").inc(_count(details.get("cached_tokens")))


def stream_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body sent upstream for a stream (usage always asked for) and whether the client asked itself."""
    options = payload.get("stream_options")
    wanted = isinstance(options, Mapping) and options.get("include_usage") is True
    merged = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
    return {**payload, "stream": True, "stream_options": merged}, wanted


def of_event(event: str) -> tuple[Mapping[str, Any] | None, bool]:
    """The usage an SSE event carries (or None), and whether the event is only that (`choices` empty)."""
    if not event.startswith("data:") or '"usage"' not in event:
        return None, False
    try:
        body = json.loads(event[5:])
    except ValueError:
        return None, False
    if not isinstance(body, dict) or not isinstance(body.get("usage"), Mapping):
        return None, False
    return body["usage"], not body.get("choices")
