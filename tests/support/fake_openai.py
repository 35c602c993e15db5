"""A small controllable OpenAI-compatible backend: fast, slow, failing, rate-limited, dying mid-stream.

Its behaviour is a mutable attribute, so a test (or the load script) can switch
it while requests are in flight, e.g. to kill the primary in the middle of a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


class FakeBackend:
    def __init__(self, model: str, answer: str = "안녕하세요! 무엇을 도와드릴까요?") -> None:
        self.model = model
        self.answer = answer
        self.mode = (
            "ok"  # ok | slow | slow_stream | fail | ratelimit | bad_request | die_midstream | down | models_down
        )
        self.delay_s = 0.0
        self.calls = 0
        self.disconnects = 0
        self.embedded: list[str] = []
        self.last_request: dict[str, Any] | None = None
        self.requests: list[dict[str, Any]] = []  # every chat body received, for tests that inspect them all
        self.model_calls = 0
        self.embed_delay_s = 0.0
        self.refusal: dict[str, Any] = {"error": {"message": "max_tokens too large", "type": "invalid_request_error"}}
        self.refusal_status = 400  # what mode "bad_request" answers
        self.list_models = True  # False: /v1/models is a 404, like a backend that does not name its model
        self.cached_tokens = 0  # > 0: usage.prompt_tokens_details.cached_tokens, as vLLM's prefix cache reports
        self.completions: list[dict[str, Any]] = []  # every /v1/completions body received
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/v1/models")
        async def models() -> Any:
            self.model_calls += 1
            if self.mode in ("down", "models_down"):
                return JSONResponse({"error": {"message": "no models here"}}, 500)
            if not self.list_models:
                return JSONResponse({"error": {"message": "not found"}}, 404)
            return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "x"}]}

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> dict[str, Any]:
            body = await request.json()
            if self.embed_delay_s:
                await asyncio.sleep(self.embed_delay_s)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            self.embedded.extend(texts)
            vecs = [[float(t.count(ch)) for ch in "서울부산항구수도기차"] for t in texts]
            return {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)],
                "model": self.model,
            }

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            self.calls += 1
            body = await request.json()
            self.last_request = body
            self.requests.append(body)
            if self.mode == "down":
                raise ConnectionError("down")
            if self.mode == "fail":
                return JSONResponse({"error": {"message": "boom"}}, 500)
            if self.mode == "ratelimit":
                return JSONResponse({"error": {"message": "slow down"}}, 429)
            if self.mode == "bad_request":
                return JSONResponse(self.refusal, self.refusal_status)
            if self.mode == "slow" or self.delay_s:
                deadline = time.monotonic() + (self.delay_s or 5)
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                    if self.mode == "slow" and await request.is_disconnected():
                        self.disconnects += 1  # the caller gave up and closed the connection
                        return Response(status_code=499)
            if body.get("stream"):
                include_usage = (body.get("stream_options") or {}).get("include_usage") is True
                return StreamingResponse(self._stream(include_usage), media_type="text/event-stream")
            return JSONResponse(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": self.answer}, "finish_reason": "stop"}
                    ],
                    "usage": self.usage(),
                }
            )

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            """vLLM's and Ollama's text completions: a prompt in, text out."""
            body = await request.json()
            self.completions.append(body)
            if self.mode in ("down", "fail"):
                return JSONResponse({"error": {"message": "boom"}}, 500)
            if body.get("stream"):

                async def events() -> AsyncIterator[str]:
                    for word in self.answer.split(" "):
                        choice = {"index": 0, "text": word, "finish_reason": None}
                        yield f"data: {json.dumps({'object': 'text_completion', 'choices': [choice]})}\n\n"
                    if (body.get("stream_options") or {}).get("include_usage") is True:
                        yield f"data: {json.dumps({'object': 'text_completion', 'choices': [], 'usage': self.usage()})}\n\n"
                    yield "data: [DONE]\n\n"

                return StreamingResponse(events(), media_type="text/event-stream")
            return JSONResponse(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [{"index": 0, "text": self.answer, "finish_reason": "stop", "logprobs": None}],
                    "usage": self.usage(),
                }
            )

        return app

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage

    async def _stream(self, include_usage: bool = False) -> AsyncIterator[str]:
        def chunk(content: str | None, finish: str | None = None) -> str:
            delta = {"content": content} if content is not None else {}
            return (
                "data: "
                + json.dumps(
                    {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": self.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    },
                    ensure_ascii=False,
                )
                + "\n\n"
            )

        words = self.answer.split(" ")
        for i, word in enumerate(words):
            if self.mode == "die_midstream" and i == 1:
                raise ConnectionError("backend died mid-stream")
            if self.mode == "slow_stream" and i > 0:
                await asyncio.sleep(1.0)
            yield chunk(word + (" " if i < len(words) - 1 else ""))
        yield chunk(None, "stop")
        if include_usage:  # vLLM's shape: a last chunk with no choices and the usage
            usage_chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": self.usage()}
            yield f"data: {json.dumps(usage_chunk)}\n\n"
        yield "data: [DONE]\n\n"


def main() -> None:
    """Run one fake backend as its own process (the load and failover benchmarks kill it)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--answer", default="안녕하세요! 무엇을 도와드릴까요?")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeBackend(args.model, args.answer)
    fake.delay_s = args.delay
    uvicorn.run(fake.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
