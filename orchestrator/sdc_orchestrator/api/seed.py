"""The seed's chat: `/api/v1/chat` (retrieval, then the model; sources with the answer) and the old Gemini
service's `/api/v1/generate` (the caller brings its own context)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter

from sdc_orchestrator import sampling, sse
from sdc_orchestrator.api.deps import USER_HEADER, Chat, chat
from sdc_orchestrator.api.errors import invalid_field
from sdc_orchestrator.api_models import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    Source,
    count_ignored,
)
from sdc_orchestrator.fitting import FitHints
from sdc_orchestrator.limits import InputError, check_keywords, check_sampling
from sdc_orchestrator.pipeline import RESPONSE_ID_HEADER, Opened
from sdc_orchestrator.rag import rewrite
from sdc_orchestrator.rag.prompt import rag_messages
from sdc_orchestrator.rag.retriever import Hit
from sdc_orchestrator.services import Services
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.upstream import Attempts

router = APIRouter()
log = logging.getLogger("sdc_orchestrator.rag")
REWRITES = Counter(
    "sdc_orchestrator_rag_rewrites_total", "Weak questions sent to the model for a rewrite, by outcome", ["outcome"]
)


def check_message(text: str, settings: OrchestratorSettings, field: str = "message") -> None:
    if not text.strip():
        raise invalid_field(field, "must not be blank")
    if len(text) > settings.sdc_max_message_chars:
        raise invalid_field(field, f"is {len(text)} characters; the limit is {settings.sdc_max_message_chars}")


async def retrieve(
    services: Services, tenant: str, question: str, use_rag: bool | None, ask: rewrite.Ask | None = None
) -> list[Hit]:
    retriever = await services.retriever_for(tenant)
    if use_rag is False or (use_rag is None and not retriever.passages):
        return []
    hits, _ = await rewrite.search(retriever, question, services.settings.sdc_rag_top_k, ask)
    return hits


def rewriter(services: Services, provider: str, model: str | None) -> rewrite.Ask | None:
    """With SDC_RAG_REWRITE: the chat's own model asked for a weak question's rewrite (rag/rewrite.py), once,
    bounded by SDC_RAG_REWRITE_TIMEOUT_S; any failure is None (the question is searched as asked)."""
    settings = services.settings
    if not settings.sdc_rag_rewrite:
        return None

    async def ask(messages: list[dict[str, str]]) -> str | None:
        payload = {"model": model, "messages": messages, "max_tokens": rewrite.MAX_TOKENS, "temperature": 0.0}
        attempts = Attempts()
        try:
            async with asyncio.timeout(settings.sdc_rag_rewrite_timeout_s):
                _, data = await services.upstream.complete(provider, payload, attempts)
            content = data["choices"][0]["message"]["content"]
        except Exception as err:  # optional: whatever failed, the question is searched as asked
            REWRITES.labels("failed").inc()
            log.info("query rewrite skipped: %s", type(err).__name__)
            return None
        finally:
            attempts.close()
        REWRITES.labels("answered" if isinstance(content, str) and content.strip() else "empty").inc()
        return content if isinstance(content, str) else None

    return ask


def source(hit: Hit) -> Source:
    return Source(
        id=hit.passage.doc_id,
        text=hit.passage.text,
        score=round(hit.score, 6),
        metadata=hit.metadata,
        matched=list(hit.matched),
        related=list(hit.related),
        deciding=list(hit.deciding),
    )


def sampling_of(body: ChatRequest, services: Services) -> dict[str, Any]:
    """The chat's model and sampling: the caller's, checked, then the guide's defaults."""
    payload: dict[str, Any] = {"model": body.model}
    for key in ("temperature", "top_p", "max_tokens"):
        if getattr(body, key) is not None:
            payload[key] = getattr(body, key)
    check_sampling(payload, services.input_limits)
    return services.pipeline.with_defaults(payload)


async def _sourced(opened: Opened, sources: list[Source]) -> AsyncIterator[bytes]:
    """The seed's stream: the sources first (with the model and response id), then the backend's chunks."""
    meta = {
        "sources": [s.model_dump() for s in sources],
        "model": opened.model,
        "provider": opened.endpoint.provider,
        "response_id": opened.response_id,
    }
    yield sse.data(meta, "sources")
    async for chunk in opened.events:
        yield chunk


@router.post("/api/v1/chat", response_model=ChatResponse)
async def seed_chat(body: ChatRequest, request: Request, ctx: Annotated[Chat, chat("chat")]) -> Response:
    services, call = ctx.services, ctx.call
    pipeline = services.pipeline
    check_message(body.message, services.settings)
    count_ignored("chat", body)
    provider = pipeline.provider(body.provider)
    payload = sampling_of(body, services)
    hits = await retrieve(
        services, call.tenant, body.message, body.use_rag, rewriter(services, provider, payload.get("model"))
    )
    payload["messages"] = rag_messages(body.message, hits)
    call.attempts.user = request.headers.get(USER_HEADER) or body.user
    # Fitting to the model may drop the least relevant passages (fitting.py); the sources follow.
    fit = call.attempts.fit = FitHints(
        body.max_tokens is None, len(hits), lambda n: rag_messages(body.message, hits[:n])
    )

    def sources() -> list[Source]:
        return [source(h) for h in (hits if fit.passages_used is None else hits[: fit.passages_used])]

    if body.stream:
        events, headers = await pipeline.stream(call, provider, payload, lambda opened: _sourced(opened, sources()))
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    answer = await pipeline.answer(call, provider, payload)
    return JSONResponse(
        ChatResponse(
            response=answer.text,
            model=answer.model,
            provider=answer.endpoint.provider,
            processing_time=round(time.perf_counter() - call.started, 4),
            sources=sources(),
            fallback_used=call.attempts.first_provider not in (None, answer.endpoint.provider),
            response_id=answer.response_id,
        ).model_dump(),
        headers={RESPONSE_ID_HEADER: answer.response_id},
    )


@router.post("/api/v1/generate", response_model=GenerateResponse)
@router.post("/generate", response_model=GenerateResponse, include_in_schema=False)
async def generate(body: GenerateRequest, request: Request, ctx: Annotated[Chat, chat("generate")]) -> JSONResponse:
    """The old Gemini service's endpoint: the caller brings its own context."""
    call, settings, pipeline = ctx.call, ctx.services.settings, ctx.services.pipeline
    check_message(body.query, settings, "query")
    count_ignored("generate", body)
    context = "\n".join(body.context) if isinstance(body.context, list) else body.context
    if context and len(context) > settings.sdc_max_prompt_chars:
        raise InputError(f"context: {len(context)} characters; the limit is {settings.sdc_max_prompt_chars}", 413)
    keywords = check_keywords(body.korean_analysis)
    if keywords:
        context = f"{context or ''}\n핵심어: {', '.join(keywords)}".strip()
    payload = pipeline.with_defaults({"messages": rag_messages(body.query, [], context), "model": None})
    call.attempts.user = request.headers.get(USER_HEADER)
    call.attempts.fit = FitHints(defaulted_max_tokens=True)
    answer = await pipeline.answer(call, pipeline.provider(body.provider), payload)
    return JSONResponse(
        GenerateResponse(
            response=answer.text,
            model_used=sampling.model_used(answer.endpoint.provider, answer.model),
            processing_time=round(time.perf_counter() - call.started, 4),
            korean_optimized=True,
        ).model_dump(),
        headers={RESPONSE_ID_HEADER: answer.response_id},
    )
