"""Server-sent events, framed on event boundaries: one place that reads and writes the wire format.

A backend's stream is read as events (the lines up to a blank line, joined), not as lines: an event of
several lines (`event: x` then `data: ...`) stays one event, and each one is written back with a single
blank line after it. Every event written is escaped for line readers (sanitize.sse_safe): U+2028 and its
kin, which JSON leaves raw, would otherwise cut an event in two for a reader that splits on them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp

from sdc_orchestrator.sanitize import sse_safe

DONE = "data: [DONE]"


def frame(event: str) -> bytes:
    """One event on the wire: escaped, ended by a blank line."""
    return f"{sse_safe(event)}\n\n".encode()


def data(value: Any, name: str | None = None, *, ascii_only: bool = False) -> bytes:
    """A `data:` event holding `value` as JSON (UTF-8 as it is unless `ascii_only`), optionally named."""
    event = f"data: {json.dumps(value, ensure_ascii=ascii_only)}"
    return frame(f"event: {name}\n{event}" if name else event)


def comment(text: str) -> bytes:
    """A comment (`: text`): clients ignore it; proxies see traffic (keep-alive)."""
    return f": {text}\n\n".encode()


def error(message: str, kind: str, **extra: Any) -> bytes:
    """The in-band error event a stream ends with once its 200 is sent."""
    return data({"error": {"message": message, "type": kind, **extra}}, ascii_only=True)


def is_done(event: str) -> bool:
    return event.strip() == DONE


def response_events(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """A response body's events, read straight from its byte lines (one generator per stream)."""
    return events(resp.content)


async def lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """A response body's lines, decoded, line ends removed."""
    async for raw in resp.content:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


async def events(source: AsyncIterable[bytes | str]) -> AsyncIterator[str]:
    """The events of a stream of lines (raw bytes are decoded): the lines of each event joined by `\\n`,
    split on blank lines. A stream that ends without a last blank line still gives its last event.
    """
    pending: list[str] = []
    async for raw in source:
        line = (raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw).rstrip("\r\n")
        if line.strip():
            pending.append(line)
        elif pending:
            yield "\n".join(pending)
            pending = []
    if pending:
        yield "\n".join(pending)


async def next_event(source: AsyncIterator[str]) -> str:
    """The next event; raises StopAsyncIteration at the end."""
    return await source.__anext__()
