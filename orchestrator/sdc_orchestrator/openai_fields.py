"""OpenAI request fields beyond the core ones: each passed through or ignored, as the README's table says.

Clients' SDCs and tools send fields of OpenAI's newer API (`store`, `metadata`, `reasoning_effort`) and
vLLM's extras (`chat_template_kwargs`); answering them 400 breaks those tools for nothing. Each field
here has a type check (a hostile value is still a 400 that names it) and one treatment:

- PASSED: sent to the backend, which acts on it (vLLM, and Gemini for the OpenAI ones).
- VLLM_ONLY: sent to vLLM, Ollama and sdc-runtime (the latter two ignore what they do not know), never
  to Gemini, whose OpenAI endpoint refuses fields it does not know.
- IGNORED: accepted and dropped: they ask OpenAI's platform for something that has no meaning here
  (storing completions for its dashboard, service tiers, its prompt-cache routing).

Fields in no table and not checked by limits.py stay refused (400 "unknown parameter"), as OpenAI does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sdc_orchestrator.limits import InputError, json_depth

MAX_OBJECT_BYTES = 64 * 1024


def _string(limit: int) -> Callable[[str, object], None]:
    def check(key: str, value: object) -> None:
        if not isinstance(value, str) or len(value) > limit:
            raise InputError(f"{key}: must be a string of at most {limit} characters")

    return check


def _choice(*allowed: str) -> Callable[[str, object], None]:
    def check(key: str, value: object) -> None:
        if value not in allowed:
            raise InputError(f"{key}: must be one of {', '.join(allowed)}")

    return check


def _boolean(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{key}: must be true or false")


def _non_negative_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**31:
        raise InputError(f"{key}: must be an integer from 0 to {2**31}")


def _json_object(key: str, value: object) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{key}: must be an object")
    _bounded_json(key, value)


def _bounded_json(key: str, value: object) -> None:
    if json_depth(value, 8) > 8:
        raise InputError(f"{key}: nested deeper than 8 levels")
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except ValueError:
        raise InputError(f"{key}: NaN and Infinity are not JSON") from None
    if size > MAX_OBJECT_BYTES:
        raise InputError(f"{key}: {size} bytes of JSON; the limit is {MAX_OBJECT_BYTES}", 413)


def _metadata(key: str, value: object) -> None:
    """OpenAI's own limits: 16 pairs, keys up to 64 characters, string values up to 512."""
    if not isinstance(value, dict) or len(value) > 16:
        raise InputError(f"{key}: must be an object of at most 16 pairs")
    for k, v in value.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise InputError(f"{key}: keys of at most 64 characters, string values of at most 512")


def _schema_or_text(key: str, value: object) -> None:
    if not isinstance(value, dict | str):
        raise InputError(f"{key}: must be a JSON schema (an object or its text)")
    _bounded_json(key, value)


def _strings(key: str, value: object) -> None:
    if not isinstance(value, list) or not value or len(value) > 256 or not all(isinstance(v, str) for v in value):
        raise InputError(f"{key}: must be a list of 1 to 256 strings")
    _bounded_json(key, value)


# field -> (check, what it does here). The README's table ("OpenAI fields") is written from these.
PASSED: dict[str, tuple[Callable[[str, object], None], str]] = {
    "reasoning_effort": (
        _choice("none", "minimal", "low", "medium", "high"),
        "reasoning models on vLLM and Gemini; others ignore it",
    ),
    "verbosity": (_choice("low", "medium", "high"), "passed; models that do not know it ignore it"),
}
VLLM_ONLY: dict[str, tuple[Callable[[str, object], None], str]] = {
    "chat_template_kwargs": (_json_object, "vLLM: arguments to the chat template (e.g. enable_thinking)"),
    "min_tokens": (_non_negative_int, "vLLM: generate at least this many tokens"),
    "ignore_eos": (_boolean, "vLLM and sdc-runtime: keep generating past the end-of-sequence token"),
    "skip_special_tokens": (_boolean, "vLLM"),
    "include_stop_str_in_output": (_boolean, "vLLM"),
    "guided_json": (_schema_or_text, "vLLM: structured output by a JSON schema"),
    "guided_regex": (_string(4096), "vLLM: structured output by a regular expression"),
    "guided_choice": (_strings, "vLLM: the answer is one of these strings"),
    "structured_outputs": (_json_object, "vLLM (newer name of the guided_* fields)"),
}
IGNORED: dict[str, tuple[Callable[[str, object], None], str]] = {
    "store": (_boolean, "OpenAI's stored completions; nothing is stored for a dashboard here"),
    "metadata": (_metadata, "tags for OpenAI's stored completions"),
    "service_tier": (_choice("auto", "default", "flex", "scale", "priority"), "one tier here"),
    "prompt_cache_key": (_string(1024), "vLLM's prefix cache needs no key"),
    "safety_identifier": (_string(256), "OpenAI's abuse monitoring"),
    "prediction": (_json_object, "OpenAI's predicted outputs"),
}
VLLM_ONLY_PROVIDERS = frozenset({"vllm", "ollama", "transformers"})


def accept(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the body without the table's fields, the fields to pass on); each field present is checked first."""
    core: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in body.items():
        entry = PASSED.get(key) or VLLM_ONLY.get(key) or IGNORED.get(key)
        if entry is None:
            core[key] = value
            continue
        if value is None:
            continue
        entry[0](key, value)
        if key not in IGNORED:
            extras[key] = value
    return core, extras


def for_provider(body: dict[str, Any], provider: str) -> dict[str, Any]:
    """The body as `provider` gets it: vLLM's extras only where they are known or ignored."""
    if provider in VLLM_ONLY_PROVIDERS or not VLLM_ONLY.keys() & body.keys():
        return body
    return {k: v for k, v in body.items() if k not in VLLM_ONLY}


def table() -> list[tuple[str, str, str]]:
    """(field, treatment, note) rows, for the README and its test."""
    rows = [(k, "passed", note) for k, (_, note) in PASSED.items()]
    rows += [(k, "passed, not to Gemini", note) for k, (_, note) in VLLM_ONLY.items()]
    rows += [(k, "ignored", note) for k, (_, note) in IGNORED.items()]
    return rows
