"""The fastest OpenAI-compatible backend we can put on loopback: raw asyncio, a fixed short answer.

A framework-free HTTP/1.1 server (keep-alive, Content-Length or chunked SSE), so
"direct to the backend" measures the physical limit of this machine and the
proxies' figures are not hidden behind a slow backend.
Run: `python benchmarks/fast_backend.py --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

ANSWER = "안녕하세요! 무엇을 도와드릴까요?"
WORDS = ANSWER.split(" ")


def completion() -> bytes:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
        },
        ensure_ascii=False,
    ).encode()


def chunk(delta: dict[str, str], finish: str | None) -> bytes:
    body = json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
        ensure_ascii=False,
    )
    return f"data: {body}\n\n".encode()


STREAM = (
    [chunk({"role": "assistant", "content": ""}, None)]
    + [chunk({"content": w + (" " if i < len(WORDS) - 1 else "")}, None) for i, w in enumerate(WORDS)]
    + [chunk({}, "stop"), b"data: [DONE]\n\n"]
)
MODELS = json.dumps(
    {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET":
                payload = MODELS if path.endswith("/models") else b'{"status":"ok"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
            elif b'"stream": true' in body or b'"stream":true' in body:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                for part in STREAM:
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                payload = completion()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
