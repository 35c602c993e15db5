"""Input limits, checked before any backend call: pure functions from a request body to a clean one.

Every check names the field and the limit, so a refusal is a 4xx the caller
can act on. The OpenAI pass-through is checked field by field against an
allow-list (OpenAI itself answers 400 to unknown parameters): a body that
passes is one no backend should choke on (no `max_tokens` of 1e9 or -5, no
`n: 1000`, no NaN, no 1e30 seed, no 20 stop strings). Message text is
neutralized here too (sdc_orchestrator.sanitize).

Before any field is looked at, `check_tree` walks the whole body once
(iteratively): nesting deeper than MAX_DEPTH, integers outside int64 (a
300-digit integer overflows `math.isfinite` and every float conversion), NaN
and Infinity anywhere, and text that is not valid Unicode (a lone surrogate
from a `\\ud800` escape cannot be encoded, so echoing it in an error or
sending it to a backend would fail) are refused with the field's path. Only
then does any arithmetic or echo happen.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdc_orchestrator.sanitize import neutralize, neutralize_json

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MIN_TEMPERATURE = 1e-3  # below this, backends divide by ~0; 0 itself means greedy
MAX_STOP = 4
MAX_STOP_CHARS = 256
INT64 = 2**63
MAX_DEPTH = 32  # a tool's JSON schema nests a few levels per object; the parser's own limit is ~1000
MAX_TOOLS = 128  # OpenAI's limit
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's pattern for function names


class InputError(ValueError):
    """A request the orchestrator refuses; `status` is the 4xx to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputLimits:
    max_tokens: int = 4096
    max_n: int = 4
    max_messages: int = 256
    max_prompt_chars: int = 64000
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 8


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite number; an integer of any size is finite (math.isfinite would overflow on 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _label(key: object) -> str:
    text = str(key)[:64]
    return text.encode("utf-8", "backslashreplace").decode()


def check_text(text: str, where: str) -> None:
    """Refuse text that is not valid Unicode: a lone (or reversed) surrogate cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"{where}: not valid Unicode (a lone surrogate at character {err.start})") from None


def check_tree(value: object, where: str = "body", max_depth: int = MAX_DEPTH) -> None:
    """One iterative walk of a parsed JSON body: depth, integer range, NaN/Infinity and Unicode, keys included."""
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, path)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not -INT64 <= node < INT64:
                raise InputError(f"{path}: integers must fit in 64 bits (this one has {len(str(abs(node)))} digits)")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InputError(f"{path}: NaN and Infinity are not JSON numbers")
        elif isinstance(node, dict | list):
            if depth >= max_depth:
                raise InputError(f"{path}: nested deeper than {max_depth} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    check_text(key, f"{path}: a key")
                stack.append(
                    (child, f"{path}.{_label(key)}" if isinstance(node, dict) else f"{path}[{key}]", depth + 1)
                )


def check_int(body: Mapping[str, Any], key: str, low: int, high: int, why: str = "") -> None:
    if key in body and body[key] is not None:
        value = body[key]
        if not is_int(value) or not low <= value <= high:
            raise InputError(f"{key}: must be an integer from {low} to {high}{why}")


def check_number(body: Mapping[str, Any], key: str, low: float, high: float, low_open: bool = False) -> None:
    if key in body and body[key] is not None:
        value = body[key]
        ok = is_number(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            bound = f"({low}" if low_open else f"[{low}"
            raise InputError(f"{key}: must be a finite number in {bound}, {high}]")


def check_sampling(body: Mapping[str, Any], limits: InputLimits) -> None:
    """The sampling fields shared by every chat route."""
    why = " (SDC_MAX_TOKENS)"
    check_int(body, "max_tokens", 1, limits.max_tokens, why)
    check_int(body, "max_completion_tokens", 1, limits.max_tokens, why)
    check_number(body, "temperature", 0, 2)
    if is_number(body.get("temperature")) and 0 < body["temperature"] < MIN_TEMPERATURE:
        raise InputError(f"temperature: must be 0 (greedy) or at least {MIN_TEMPERATURE}")
    check_number(body, "top_p", 0, 1, low_open=True)


def check_stop(value: object) -> None:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InputError("stop: must be a string or a list of strings")
    if len(stops) > MAX_STOP:
        raise InputError(f"stop: at most {MAX_STOP} sequences")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise InputError(f"stop: each sequence must have 1 to {MAX_STOP_CHARS} characters")


def prompt_chars(messages: list[dict[str, Any]]) -> int:
    """Characters a chat template renders from checked messages: content, name, tool_call_id, tool calls."""
    total = 0
    for m in messages:
        total += len(m["content"] or "") + len(m.get("name", "")) + len(m.get("tool_call_id", ""))
        total += _json_chars(m["tool_calls"]) if m.get("tool_calls") else 0
    return total


def _content_text(content: object, where: str) -> str | None:
    """The neutralized content (None stays None).

    Text parts are joined into one string (with a newline, as vLLM joins them) before neutralizing:
    a template that concatenates parts would otherwise rebuild a marker split across two of them.
    """
    if content is None:
        return None
    if isinstance(content, str):
        return neutralize(content)
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InputError(f"{where}.content[{i}]: only text parts ({{'type': 'text', 'text': ...}}) are served")
            texts.append(part["text"])
        return neutralize("\n".join(texts))
    raise InputError(f"{where}.content: must be a string or a list of text parts")


def _json_chars(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False))


def check_tool_calls(calls: object, where: str) -> list[dict[str, Any]]:
    """An assistant's tool calls: id, type and function {name, arguments} strings, all neutralized."""
    if not isinstance(calls, list):
        raise InputError(f"{where}.tool_calls: must be a list")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
            raise InputError(f"{where}.tool_calls[{i}]: must be {{'id', 'type', 'function': {{'name', 'arguments'}}}}")
        out.append(neutralize_json(call))
    return out


def check_tools(tools: object) -> list[dict[str, Any]]:
    """Function tools: at most MAX_TOOLS, names as OpenAI allows them, every string neutralized."""
    if not isinstance(tools, list):
        raise InputError("tools: must be a list")
    if len(tools) > MAX_TOOLS:
        raise InputError(f"tools: at most {MAX_TOOLS} tools")
    for i, item in enumerate(tools):
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or item.get("type", "function") != "function":
            raise InputError(f"tools[{i}]: must be {{'type': 'function', 'function': {{'name', ...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise InputError(f"tools[{i}].function.name: 1 to 64 letters, digits, '_' or '-'")
        if not isinstance(fn.get("description", ""), str):
            raise InputError(f"tools[{i}].function.description: must be a string")
    return [neutralize_json(t) for t in tools]


def check_messages(messages: object, limits: InputLimits) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InputError("messages: a non-empty list is required")
    if len(messages) > limits.max_messages:
        raise InputError(f"messages: at most {limits.max_messages} messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InputError(f"{where}: must be an object with role and content")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InputError(f"{where}.role: must be one of {', '.join(sorted(ROLES))}")
        content = _content_text(message.get("content"), where)
        if content is None and role != "assistant":
            raise InputError(f"{where}.content: required")
        clean = {k: v for k, v in message.items() if k in ("role", "name", "tool_call_id", "tool_calls")}
        for key in ("name", "tool_call_id"):
            if key in clean:
                if not isinstance(clean[key], str) or len(clean[key]) > 256:
                    raise InputError(f"{where}.{key}: must be a string of at most 256 characters")
                clean[key] = neutralize(clean[key])
        if clean.get("tool_calls") is not None:
            clean["tool_calls"] = check_tool_calls(clean["tool_calls"], where)
        out.append({**clean, "content": content})
    total = prompt_chars(out)
    if total > limits.max_prompt_chars:
        raise InputError(f"messages: {total} characters; the limit is {limits.max_prompt_chars}", 413)
    return out


# The OpenAI parameters passed through, each with its check (None: structure only, size is bounded by the body).
def _checked_openai(body: Mapping[str, Any], limits: InputLimits) -> None:
    check_sampling(body, limits)
    check_int(body, "n", 1, limits.max_n)
    check_int(body, "seed", -INT64, INT64 - 1)
    check_int(body, "top_logprobs", 0, 20)
    check_int(body, "top_k", -1, 1000)
    check_number(body, "presence_penalty", -2, 2)
    check_number(body, "frequency_penalty", -2, 2)
    check_number(body, "min_p", 0, 1)
    check_number(body, "repetition_penalty", 0, 2, low_open=True)
    if body.get("stop") is not None:
        check_stop(body["stop"])
    for key in ("stream", "logprobs", "parallel_tool_calls"):
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            raise InputError(f"{key}: must be true or false")
    for key in ("model", "user"):
        if key in body and body[key] is not None and (not isinstance(body[key], str) or len(body[key]) > 256):
            raise InputError(f"{key}: must be a string of at most 256 characters")
    for key in ("response_format", "stream_options", "logit_bias"):
        if key in body and body[key] is not None and not isinstance(body[key], dict):
            raise InputError(f"{key}: must be an object")
    if "tool_choice" in body and not isinstance(body["tool_choice"], str | dict | None):
        raise InputError("tool_choice: must be a string or an object")
    bias = body.get("logit_bias") or {}
    if len(bias) > 300 or not all(is_number(v) and -100 <= v <= 100 for v in bias.values()):
        raise InputError("logit_bias: at most 300 entries, each from -100 to 100")


OPENAI_KEYS = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "top_k",
        "min_p",
        "repetition_penalty",
    }
)


def check_openai_chat(body: object, limits: InputLimits) -> dict[str, Any]:
    """A checked copy of an OpenAI chat body, messages neutralized.

    A body without a token limit gets the guide's default next (sampling.with_defaults), which never
    exceeds SDC_MAX_TOKENS: the cap holds when the client sets nothing too."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    check_tree(body)
    unknown = sorted(set(body) - OPENAI_KEYS)
    if unknown:
        raise InputError(f"unknown parameter(s): {', '.join(k[:64] for k in unknown[:5])}")
    _checked_openai(body, limits)
    out = {k: v for k, v in body.items() if v is not None}
    out["messages"] = check_messages(body.get("messages"), limits)
    # Everything a chat template renders counts against the prompt cap: tools and tool_choice too.
    extra = 0
    if out.get("tools") is not None:
        out["tools"] = check_tools(out["tools"])
        extra += _json_chars(out["tools"])
    if isinstance(out.get("tool_choice"), dict):
        out["tool_choice"] = neutralize_json(out["tool_choice"])
        extra += _json_chars(out["tool_choice"])
    if extra:
        total = extra + prompt_chars(out["messages"])
        if total > limits.max_prompt_chars:
            raise InputError(f"messages and tools: {total} characters; the limit is {limits.max_prompt_chars}", 413)
    return out


def json_depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON value, iteratively (a recursive walk is itself a RecursionError risk)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_metadata(metadata: Mapping[str, Any], limits: InputLimits, where: str = "metadata") -> None:
    if json_depth(metadata, limits.max_metadata_depth) > limits.max_metadata_depth:
        raise InputError(f"{where}: nested deeper than {limits.max_metadata_depth} levels")
    try:
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
    except ValueError:
        raise InputError(f"{where}: NaN and Infinity are not JSON") from None
    if size > limits.max_metadata_bytes:
        raise InputError(f"{where}: {size} bytes of JSON; the limit is {limits.max_metadata_bytes}", 413)


def check_keywords(analysis: Mapping[str, Any] | None) -> list[str]:
    """The old Gemini service's `korean_analysis.keywords`: a short list of short strings."""
    keywords = (analysis or {}).get("keywords")
    if keywords is None:
        return []
    if not isinstance(keywords, list) or not all(isinstance(k, str) and len(k) <= 100 for k in keywords):
        raise InputError("korean_analysis.keywords: must be a list of strings of at most 100 characters")
    if len(keywords) > 64:
        raise InputError("korean_analysis.keywords: at most 64 keywords")
    return [neutralize(k) for k in keywords]


# The OpenAI chat body as OpenAPI documents it (validation is `check_openai_chat`; this is for clients and fuzzers).
_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
OPENAI_CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": sorted(ROLES)},
                    "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
                    "name": {"type": "string", "maxLength": 256},
                },
            },
        },
        "model": {"type": "string", "maxLength": 256, "description": "A model from GET /v1/models, or a provider."},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "At most SDC_MAX_TOKENS."},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP}]},
        "seed": {"type": "integer"},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "user": {"type": "string", "maxLength": 256},
    },
}
