"""Streams are read and relayed on SSE event boundaries (sse.py), not line by line.

The table checks the framing alone; the server test sends a stream through a real orchestrator from a
stand-in backend that writes a two-line event, CRLF line ends and events cut across writes, and checks
that the client receives each event whole, once, ended by one blank line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from sdc_orchestrator import sse

from tests.support.servers import serve


async def _events(lines: list[str]) -> list[str]:
    async def source() -> AsyncIterator[str]:
        for line in lines:
            yield line

    return [event async for event in sse.events(source())]


@pytest.mark.parametrize(
    ("lines", "events"),
    [
        (["data: a", "", "data: b", ""], ["data: a", "data: b"]),
        (["event: note", "data: {}", "", "data: [DONE]", ""], ["event: note\ndata: {}", "data: [DONE]"]),
        (["", "", "data: a", "", "", ""], ["data: a"]),  # blank lines between events are not events
        (["data: a", "data: b"], ["data: a\ndata: b"]),  # the last event, with no blank line after it
        ([], []),
    ],
)
def test_lines_are_grouped_into_events(lines: list[str], events: list[str]) -> None:
    assert asyncio.run(_events(lines)) == events


def test_byte_lines_as_a_response_body_gives_them_are_decoded_and_grouped() -> None:
    """What `response_events` reads: aiohttp's byte lines, CRLF-ended, one multi-byte character included."""

    async def run() -> list[str]:
        async def source() -> AsyncIterator[bytes]:
            for line in (b"event: note\r\n", 'data: {"t": "가"}\r\n'.encode(), b"\r\n", b"data: [DONE]\n"):
                yield line

        return [event async for event in sse.events(source())]

    assert asyncio.run(run()) == ['event: note\ndata: {"t": "가"}', "data: [DONE]"]


def test_frame_escapes_line_separators_and_ends_with_one_blank_line() -> None:
    assert sse.frame('data: {"t": "a\u2028b"}') == b'data: {"t": "a\\u2028b"}\n\n'
    assert sse.comment("waiting") == b": waiting\n\n"
    assert sse.data({"a": "가"}, "sources") == 'event: sources\ndata: {"a": "가"}\n\n'.encode()


def _chunk(content: str) -> str:
    return json.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    )


def stand_in() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"event: note\r\ndata: "  # one event in two writes, CRLF line ends
            await asyncio.sleep(0.05)
            yield f"{_chunk('가')}\r\n\r\n".encode()
            yield f"data: {_chunk('나')}\n\ndata: {_chunk('다')}\n\n".encode()  # two events in one write
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    return app


def test_a_streamed_event_of_two_lines_reaches_the_client_whole(
    orchestrator_app: Callable[..., tuple[str, FastAPI]],
) -> None:
    with serve(stand_in()) as backend:
        port = int(backend.rsplit(":", 1)[1])
        base, _ = orchestrator_app(vllm_port=port, llm_fallback="none")
        body = {"messages": [{"role": "user", "content": "안녕"}], "stream": True}
        resp = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    events = resp.text.split("\n\n")
    assert events[-1] == "", "the stream ends with one blank line"
    assert events[:-1] == [
        f"event: note\ndata: {_chunk('가')}",
        f"data: {_chunk('나')}",
        f"data: {_chunk('다')}",
        "data: [DONE]",
    ]
