"""A backend's refusal (a 4xx), rewritten into a safe error before a client sees it.

A backend's error body is written for its operator: vLLM and Ollama name
model paths (`/models/...`), their own address (`http://10.0.3.7:8000`), the
cluster's service names. The client gets a fixed `type` per status, and the
backend's message only with every token that looks like an address, a host,
a port or a file path replaced by `[redacted]`, cut to MAX_CHARS.
"""

from __future__ import annotations

import re
from typing import Any

MAX_CHARS = 300
KINDS = {
    400: "invalid_request_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}
# Anything with a slash or backslash (URL, file path), an IPv4 or IPv6 address, host:port, or a dotted
# host name (two dots or more: `engine.ns.svc`, `api.example.com`).
_SECRETISH = re.compile(
    r"\S*[/\\]\S*"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
    r"|\S*[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:[0-9a-fA-F:]+\S*"
    r"|\S+:\d{2,5}\b\S*"
    r"|\b[\w-]+(?:\.[\w-]+){2,}\b"
)


def scrub(text: str) -> str:
    cleaned = _SECRETISH.sub("[redacted]", text)
    cleaned = cleaned.encode("utf-8", "replace").decode()
    return cleaned if len(cleaned) <= MAX_CHARS else cleaned[: MAX_CHARS - 1] + "…"


def _message(body: Any) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message is None and isinstance(body.get("detail"), str):
            message = body["detail"]  # FastAPI-style backends
        return str(message) if message is not None else ""
    return str(body)


def public_refusal(status: int, body: Any) -> dict[str, Any]:
    """The client's error body for a backend's 4xx: a known kind, the status, a scrubbed message."""
    kind = KINDS.get(status, "invalid_request_error")
    detail = scrub(_message(body))
    message = f"the backend refused the request (HTTP {status})" + (f": {detail}" if detail else "")
    return {"error": {"message": message, "type": kind, "code": status}}
