"""OpenAI's `/v1/models` and `/v1/chat/completions` (`/v1/completions` and `/v1/embeddings`: api/completions.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sdc_orchestrator import openai_fields
from sdc_orchestrator.api.deps import USER_HEADER, Chat, ServicesDep, chat
from sdc_orchestrator.api.errors import error
from sdc_orchestrator.fitting import FitHints
from sdc_orchestrator.limits import OPENAI_CHAT_SCHEMA, check_openai_chat
from sdc_orchestrator.pipeline import RESPONSE_ID_HEADER, Opened

PROVIDERS = ("ollama", "vllm", "transformers", "gemini")  # a provider's name as `model`: any of its models

router = APIRouter()


@router.get("/v1/models")
async def models(services: ServicesDep) -> dict[str, Any]:
    served = await services.upstream.served_models()
    ids = {services.registry.model_id(e, served.get(e.name)) for e in services.registry.all("chat")}
    names = ["auto", *sorted(m for m in ids if m)]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "sdc"} for n in names],
    }


def _relayed(opened: Opened) -> AsyncIterator[bytes]:
    """The backend's OpenAI chunks as they come (upstream.py frames them)."""
    return opened.events


@router.post(
    "/v1/chat/completions",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": OPENAI_CHAT_SCHEMA}}}},
)
async def chat_completions(request: Request, ctx: Annotated[Chat, chat("openai")]) -> Response:
    services, call = ctx.services, ctx.call
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        return error(400, "the request body is not valid JSON (or nested too deeply)")
    core, extras = openai_fields.accept(raw) if isinstance(raw, dict) else (raw, {})  # the README's table
    body = {**check_openai_chat(core, services.input_limits), **extras}
    provider = "auto"
    if body.get("model") in PROVIDERS:
        provider, body = str(body["model"]), {**body, "model": None}
    user = request.headers.get(USER_HEADER) or body.get("user")
    call.attempts.user = str(user) if isinstance(user, str | int) and str(user) else None
    call.attempts.fit = FitHints(body.get("max_tokens") is None and body.get("max_completion_tokens") is None)
    pipeline = services.pipeline
    body = pipeline.with_defaults(body)
    if body.get("stream"):
        events, headers = await pipeline.stream(call, provider, body, _relayed)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    answer = await pipeline.answer(call, provider, body)
    headers = {RESPONSE_ID_HEADER: answer.response_id}
    return JSONResponse({**answer.data, "response_id": answer.response_id}, headers=headers)
