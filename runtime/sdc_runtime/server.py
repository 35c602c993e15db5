"""The runtime's HTTP API: OpenAI-compatible chat completions and embeddings.

The model loads in a background thread so the process answers `/health`
(503 until loaded) while a large model is still being read: Kubernetes probes
can then tell "loading" from "dead".

Every input is hostile until checked, in order of cost: the body size (413,
before reading it), the schema (400 naming the field), the text size against
the context (400, before tokenizing), the token count (400), then a free row
(503 with Retry-After when the queue is full). Message contents are tokenized
as plain text, never as control tokens (`Engine.chat_prompt`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdc_runtime import metrics
from sdc_runtime.engine import BadPromptError, Engine, Generation, QueueFullError, SamplingParams
from sdc_runtime.limits import BodyLimit
from sdc_runtime.model_info import ModelInfo, add_tokenize_route, chat_prompt
from sdc_runtime.protocol import ChatCompletionRequest, EmbeddingRequest

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_BODY_BYTES = 4 * 2**20  # a 128k-token prompt as escaped JSON fits; a 10 MB upload does not


RETRY_AFTER_S = "1"
# Tokenizing a short chat takes about a millisecond: doing it on the event loop saves two
# thread hand-offs per request, which on a busy machine cost more than the work. Longer text goes
# to a worker thread so it never stalls the loop.
INLINE_TOKENIZE_CHARS = 1024


def openai_error(
    status: int, message: str, kind: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status, headers)


def create_app(engine: Engine, served_model_name: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="sdc-runtime", summary="OpenAI-compatible server for a local Transformers model")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return openai_error(400, f"{where}: {first.get('msg')}", "invalid_request_error", where or None)

    @app.exception_handler(StarletteHTTPException)  # also FastAPI's own: body parse errors, 404, 405
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return openai_error(exc.status_code, str(exc.detail), kind, headers=dict(exc.headers or {}))

    def require_ready(model: str) -> None:
        if not engine.loaded.is_set():
            raise HTTPException(503, "model is still loading", headers={"Retry-After": RETRY_AFTER_S})
        if model != served_model_name:
            raise HTTPException(404, f"model '{model}' is not served here; this server serves '{served_model_name}'")

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.loaded.is_set():
            return JSONResponse({"status": "ok", "model": served_model_name})
        return JSONResponse({"status": "loading"}, 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    info = ModelInfo(engine)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": served_model_name, "object": "model", "created": 0, "owned_by": "sdc-runtime"}
        return {"object": "list", "data": [{**entry, **info.entry_fields()}]}

    add_tokenize_route(app, engine, lambda model: require_ready(model or served_model_name), openai_error)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        require_ready(body.model)
        if not engine.is_generative:
            raise HTTPException(400, f"model '{served_model_name}' is an embedding model: use /v1/embeddings")
        max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
        params = SamplingParams(body.temperature, body.top_p, max_tokens, body.stop_list(), body.seed, body.ignore_eos)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            # Sizes first: tokenizing megabytes costs seconds of CPU that a 400 does not need.
            chars = sum(len(m["content"]) for m in messages)
            engine.check_text_size(chars, max_tokens)
            # chat_prompt: a template's own refusal (Gemma 2's "System role not supported") is a 400.
            if chars <= INLINE_TOKENIZE_CHARS:
                prompt = chat_prompt(engine, messages)
            else:
                prompt = await asyncio.to_thread(chat_prompt, engine, messages)
            generation = engine.submit(prompt, params, stream=body.stream)
        except BadPromptError as err:
            metrics.REQUESTS.labels("chat", "refused").inc()
            return openai_error(400, str(err), "invalid_request_error", "messages")
        except QueueFullError as err:
            metrics.REQUESTS.labels("chat", "busy").inc()
            return openai_error(503, f"server busy: {err}", "server_busy", headers={"Retry-After": RETRY_AFTER_S})
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        started = time.monotonic()
        if body.stream:
            return StreamingResponse(
                _sse(generation, completion_id, created, served_model_name, started),
                media_type="text/event-stream",
            )
        text = await _collect_until_disconnect(generation, request)
        if text is None:
            return Response(status_code=499)
        metrics.REQUESTS.labels("chat", "ok").inc()
        metrics.LATENCY.labels("chat").observe(time.monotonic() - started)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": served_model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": generation.finish_reason,
                    }
                ],
                "usage": _usage(generation),
            }
        )

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        require_ready(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        started = time.monotonic()
        vectors, tokens = await engine.embed(texts)
        metrics.REQUESTS.labels("embeddings", "ok").inc()
        metrics.LATENCY.labels("embeddings").observe(time.monotonic() - started)
        return {
            "object": "list",
            "model": served_model_name,
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI clients ask for base64 (little-endian float32) by default: it is 4x smaller than JSON floats."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def _usage(generation: Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        # vLLM's field: prompt tokens whose prefill the prefix cache saved.
        "prompt_tokens_details": {"cached_tokens": generation.cached_tokens},
    }


async def _collect_until_disconnect(generation: Generation, request: Request) -> str | None:
    """Generate to the end, or stop (and free the batch row) when the client goes away."""

    async def collect() -> str:
        return "".join([delta async for delta in generation.deltas()])

    task = asyncio.create_task(collect())
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if not done and await request.is_disconnected():
            generation.cancel()
            task.cancel()
            metrics.REQUESTS.labels("chat", "cancelled").inc()
            return None
    return task.result()


# Line breaks that JSON leaves unescaped but `str.splitlines` (and so httpx's `aiter_lines`) splits on:
# a sampled token holding one would cut an event in two for such a client.
_UNSPLITTABLE = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse_event(body: dict[str, Any]) -> str:
    """One server-sent event: a single `data:` line whatever characters the text holds."""
    return f"data: {json.dumps(body, ensure_ascii=False).translate(_UNSPLITTABLE)}\n\n"


async def _sse(
    generation: Generation, completion_id: str, created: int, model: str, started: float
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish: str | None, usage: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return sse_event(body)

    yield chunk({"role": "assistant", "content": ""}, None)
    try:
        async for delta in generation.deltas():
            yield chunk({"content": delta}, None)
    except Exception as err:  # after the first byte the status is sent: report in-band
        metrics.REQUESTS.labels("chat", "error").inc()
        yield sse_event({"error": {"message": str(err), "type": "server_error"}})
        return
    yield chunk({}, generation.finish_reason, _usage(generation))
    yield "data: [DONE]\n\n"
    metrics.REQUESTS.labels("chat", "ok").inc()
    metrics.LATENCY.labels("chat").observe(time.monotonic() - started)
