"""The orchestrator's HTTP API: the seed's routes, the OpenAI routes, documents, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdc_orchestrator import metrics, openai_fields, openai_routes, sampling, status, usage
from sdc_orchestrator.api_models import (
    ChatRequest,
    ChatResponse,
    DocumentIn,
    FeedbackIn,
    GenerateRequest,
    GenerateResponse,
    Source,
    count_ignored,
)
from sdc_orchestrator.backend_errors import public_refusal
from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.endpoint_watch import start_endpoint_watch
from sdc_orchestrator.feedback import AlreadyRated, FeedbackStore, UnknownResponse
from sdc_orchestrator.fitting import FitHints
from sdc_orchestrator.gateway import DEFAULT_TENANT, GatewayMiddleware, KeyRing, Limits, without_key_names
from sdc_orchestrator.limits import (
    OPENAI_CHAT_SCHEMA,
    InputError,
    InputLimits,
    check_keywords,
    check_metadata,
    check_openai_chat,
    check_sampling,
)
from sdc_orchestrator.rag import semantic
from sdc_orchestrator.rag.prompt import rag_messages
from sdc_orchestrator.rag.retriever import Hit, Retriever, prepare
from sdc_orchestrator.rag.store import DirectoryStore
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing import service as routing
from sdc_orchestrator.sanitize import sse_safe
from sdc_orchestrator.scaling.client import ScaleClient
from sdc_orchestrator.scaling.down import Autoscaler
from sdc_orchestrator.scaling.waker import Waker, keep_alive
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.shadow import Shadow, side
from sdc_orchestrator.upstream import Attempts, ClientRequestError, NoRouteError, Upstream

OVERHEAD_HEADER = "X-SDC-Overhead-Ms"
RESPONSE_ID_HEADER = "X-SDC-Response-Id"
USER_HEADER = "x-sdc-user"


def tenant_of(request: Request) -> str:
    """The tenant the gateway found for the request's key (`default` with no keys file)."""
    return str(request.scope.get("state", {}).get("tenant") or DEFAULT_TENANT)


def safe_text(text: str) -> str:
    """Text that can be encoded whatever it echoes (a lone surrogate becomes `\\udxxx`): an error never fails."""
    return text.encode("utf-8", "backslashreplace").decode()


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": safe_text(message), "code": status, **extra}}, status)


class OverheadMiddleware:
    """Stamp chat responses with the time the orchestrator itself added (header and metric).

    A plain ASGI middleware, not BaseHTTPMiddleware: that one hides the client's
    disconnect from the endpoint, and a disconnect must cancel the upstream call.
    For a stream the header can only count the time before the first byte.
    When the request ends, however it ends, its attempts give back every
    router slot still held (the one place a cancelled request is accounted).
    """

    PATHS = ("/api/v1/chat", "/v1/chat", "/api/v1/generate", "/generate")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.PATHS):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        attempts = Attempts()
        scope.setdefault("state", {})["attempts"] = attempts

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = max(0.0, time.perf_counter() - started - attempts.upstream_s)
                message["headers"] = [
                    *message.get("headers", []),
                    (OVERHEAD_HEADER.lower().encode(), f"{own * 1000:.3f}".encode()),
                ]
                if attempts.chosen is not None:
                    message["headers"].append(
                        (routing.REPLICA_HEADER.lower().encode(), attempts.chosen.name.encode("ascii", "replace"))
                    )
                metrics.OVERHEAD.observe(own)
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            attempts.close()


class State:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.registry = EndpointRegistry(settings)
        self.router = Router(cooldown_s=settings.sdc_cooldown_s)
        self.upstream = Upstream(settings, self.registry, self.router)
        self.upstream.waker = Waker(
            self.registry,
            ScaleClient(settings.sdc_scale_api_url, settings.sdc_scale_token_file, settings.sdc_scale_ca_file)
            if settings.sdc_scale_api_url
            else None,
            max_held=settings.sdc_hold_max_per_model,
            max_wait_s=settings.sdc_hold_max_wait_s,
        )
        self.retriever = Retriever(DirectoryStore(settings.sdc_data_dir), self.embed)
        # One index per tenant (gateway.py): the `default` tenant keeps the data directory it always had.
        self.retrievers: dict[str, Retriever] = {DEFAULT_TENANT: self.retriever}
        self._retriever_lock = asyncio.Lock()
        self.keys = KeyRing(settings.sdc_api_keys_file)
        self.limits = Limits(settings.sdc_rate_limit_rpm, settings.sdc_max_concurrent_per_key)
        self.input_limits = InputLimits(
            max_tokens=settings.sdc_max_tokens,
            max_n=settings.sdc_max_n,
            max_messages=settings.sdc_max_messages,
            max_prompt_chars=settings.sdc_max_prompt_chars,
            max_metadata_bytes=settings.sdc_max_metadata_bytes,
        )
        self.ingest_slots = asyncio.Semaphore(settings.sdc_max_concurrent_ingests)
        feedback_file = settings.sdc_feedback_file or settings.sdc_data_dir / "feedback.jsonl"
        self.feedback = FeedbackStore(settings.sdc_feedback_max_responses, feedback_file)
        self.shadow = Shadow(
            settings.sdc_shadow_provider,
            self.registry,
            lambda: self.upstream.http,
            self.upstream.model_of,
            concurrency=settings.sdc_shadow_concurrency,
            timeout_s=settings.sdc_shadow_timeout_s,
            max_pairs=settings.sdc_shadow_max_pairs,
            send=self.upstream.fitted_chat,
            keep_texts=settings.sdc_shadow_keep_texts,
            text_chars=settings.sdc_shadow_text_chars,
        )

    async def retriever_for(self, request: Request) -> Retriever:
        """The request's tenant's documents, loaded on first use (in a thread: it reads the tenant's store)."""
        tenant = tenant_of(request)
        if tenant not in self.retrievers:
            async with self._retriever_lock:
                if tenant not in self.retrievers:
                    root = self.settings.sdc_data_dir / "tenants" / tenant
                    self.retrievers[tenant] = await asyncio.to_thread(Retriever, DirectoryStore(root), self.embed)
        return self.retrievers[tenant]

    def answered(
        self,
        route: str,
        endpoint: Endpoint,
        data: dict[str, Any],
        payload: dict[str, Any],
        attempts: Attempts,
        tenant: str = DEFAULT_TENANT,
    ) -> str:
        """After an answer: remember it for feedback and copy it to the shadow provider; its response id.

        The primary side's latency is its time upstream, like the shadow's: retrieval is not compared.
        """
        model = str(data.get("model") or endpoint.model)
        response_id = self.feedback.answered(endpoint.provider, model, route, tenant)
        try:
            text = str(data["choices"][0]["message"].get("content") or "")
        except (KeyError, IndexError, TypeError, AttributeError):
            return response_id
        self.shadow.submit(payload, side(endpoint.provider, model, attempts.upstream_s, data), text)
        return response_id

    async def embed(self, texts: list[str]) -> list[list[float]] | None:
        if self.settings.sdc_embedding_base_url:
            base, model = self.settings.sdc_embedding_base_url.rstrip("/"), self.settings.sdc_embedding_model
        elif targets := self.registry.all("embedding"):
            base, model = targets[0].base_url, targets[0].model
        else:
            return None
        try:
            async with self.upstream.http.post(f"{base}/embeddings", json={"model": model, "input": texts}) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            return [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return None  # dense retrieval is an improvement, never a reason to fail


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    state = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Indexing and retrieval run in worker threads. A cancelled upload stops at its next step, but a
        # step already running in a thread runs to its end: a bounded pool caps how much such work
        # can pile up, whatever clients do (work not yet started is dropped when cancelled).
        workers = ThreadPoolExecutor(settings.sdc_worker_threads, thread_name_prefix="sdc-work")
        asyncio.get_running_loop().set_default_executor(workers)
        # Load Kiwi and the analyser's models before serving: loading holds the GIL for seconds (8 s
        # measured), which would stall health checks and even the SIGTERM handler inside the first upload.
        await asyncio.to_thread(_warm_up_analysis)
        scraping = routing.start(state.registry, state.router)  # engine signals of every published replica
        watch = start_endpoint_watch(settings, state.registry)  # published endpoints within a second
        scaling_down = None
        if state.upstream.waker is not None and state.upstream.waker.scale is not None:
            down = Autoscaler(state.registry, state.router)  # spec.autoscaling: up on queues, down after idle
            scaling_down = asyncio.create_task(down.run(state.upstream.waker.scale, settings.sdc_scale_down_interval_s))
        yield
        scraping.cancel()
        if watch is not None:
            watch.cancel()
        if scaling_down is not None:
            scaling_down.cancel()
        await state.router.replicas.scraper.close()
        await state.shadow.close()
        await state.upstream.close()
        if state.upstream.waker is not None:
            await state.upstream.waker.close()
        workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="SDC orchestrator",
        version="0.1.0",
        lifespan=lifespan,
        summary="Korean RAG chat over local LLMs with cloud fallback; OpenAI-compatible.",
    )
    app.state.sdc = state

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error(422 if problems else 400, "; ".join(problems) or "invalid request")

    @app.exception_handler(InputError)
    async def refused_input(_: Request, exc: InputError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own 400 for a body it cannot parse (e.g. JSON nested 100k deep) says nothing about why.
        detail = exc.detail if exc.detail != "There was an error parsing the body" else "the body is not valid JSON"
        return JSONResponse(
            {"error": {"message": safe_text(str(detail)), "code": exc.status_code}},
            exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(NoRouteError)
    async def no_route(_: Request, exc: NoRouteError) -> JSONResponse:
        metrics.REQUESTS.labels("none", "none", f"http_{exc.status}").inc()
        response = error(exc.status, str(exc), tried=exc.tried)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(ClientRequestError)
    async def refused(_: Request, exc: ClientRequestError) -> JSONResponse:
        metrics.REQUESTS.labels("none", "none", f"http_{exc.status}").inc()
        if exc.own and isinstance(exc.body, dict):  # the orchestrator's own words (fitting.py): as written
            return JSONResponse(json.loads(safe_text(json.dumps(exc.body, ensure_ascii=False))), exc.status)
        # Never the backend's body verbatim: it names the backend's address and paths (backend_errors).
        return JSONResponse(public_refusal(exc.status, exc.body), exc.status)

    app.add_middleware(OverheadMiddleware)
    # Added last, so outermost: nothing runs for a request without a key, over its limits or too large.
    app.add_middleware(
        GatewayMiddleware,
        keys=state.keys,
        limits=state.limits,
        max_body_bytes=settings.sdc_max_body_bytes,
        admin_names=settings.admin_names(),
    )

    # -- health, metrics ---------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Serving: documents and chat routes are up (models may still be arriving)."""
        return {"status": "ok"}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """The process and its event loop answer; a restart would not help otherwise."""
        return {"status": "alive"}

    app.include_router(status.routes(settings, state.registry, state.router))  # /readyz, /api/v1/status

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        """Every series for an admin key (or an open gateway); without one, no series names a key (gateway.py)."""
        status.chat_state(settings, state.registry, state.router)  # the endpoint gauge, current at each scrape
        text = generate_latest()
        if not request.scope.get("state", {}).get("metrics_full", True):
            text = without_key_names(text)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    # -- documents ---------------------------------------------------------------------------
    @app.post("/api/v1/documents")
    async def add_documents(body: DocumentIn | list[DocumentIn], request: Request) -> JSONResponse:
        docs = body if isinstance(body, list) else [body]
        if not docs:
            raise InputError("no documents: send one object or a non-empty list")
        if len(docs) > settings.sdc_max_documents_per_request:
            raise InputError(f"{len(docs)} documents; at most {settings.sdc_max_documents_per_request} per request")
        for i, doc in enumerate(docs):
            where = f"documents[{i}]" if isinstance(body, list) else "document"
            if len(doc.text) > settings.sdc_max_document_chars:
                raise InputError(
                    f"{where}.text: {len(doc.text)} characters; the limit is {settings.sdc_max_document_chars}", 413
                )
            check_metadata(doc.metadata, state.input_limits, f"{where}.metadata")

        retriever = await state.retriever_for(request)

        async def ingest() -> list[Any]:
            # One indexing at a time (Kiwi is CPU-bound): the rest wait here, not in threads.
            async with state.ingest_slots:
                return [await retriever.upsert(d.id, d.text, d.metadata) for d in docs]

        # Cancelled when the client leaves or the time bound passes: the documents not yet stored are not stored.
        task = asyncio.create_task(ingest())
        try:
            async with asyncio.timeout(settings.sdc_ingest_timeout_s):
                stored = await _unless_disconnected(task, request)
        except NoRouteError:
            metrics.INGESTS.labels("cancelled").inc()
            raise
        except TimeoutError:
            metrics.INGESTS.labels("timeout").inc()
            raise InputError(
                f"indexing took longer than {settings.sdc_ingest_timeout_s:g} s (SDC_INGEST_TIMEOUT_S); "
                "send smaller documents",
                413,
            ) from None
        metrics.INGESTS.labels("ok").inc()
        return JSONResponse({"documents": [{"id": d.id, "passages": len(d.passages)} for d in stored]})

    @app.delete("/api/v1/documents/{doc_id:path}")
    async def delete_document(doc_id: str, request: Request) -> JSONResponse:
        if await (await state.retriever_for(request)).delete(doc_id):
            return JSONResponse({"deleted": doc_id})
        return error(404, f"no document with id '{doc_id[:512]}'")

    # -- the seed's chat -------------------------------------------------------------------
    async def retrieve(question: str, use_rag: bool | None, request: Request) -> list[Hit]:
        retriever = await state.retriever_for(request)
        if use_rag is False or (use_rag is None and not retriever.passages):
            return []
        return await retriever.search(question, settings.sdc_rag_top_k)

    def check_message(text: str, field: str = "message") -> None:
        if not text.strip():
            raise RequestValidationError([{"loc": ("body", field), "msg": "must not be blank"}])
        if len(text) > settings.sdc_max_message_chars:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", field),
                        "msg": f"is {len(text)} characters; the limit is {settings.sdc_max_message_chars}",
                    }
                ]
            )

    @app.post("/api/v1/chat", response_model=ChatResponse)
    async def chat(body: ChatRequest, request: Request) -> Response:
        started = time.perf_counter()
        check_message(body.message)
        count_ignored("chat", body)
        provider = body.provider or settings.llm_service_type
        if body.provider not in (None, "auto") and not state.registry.for_provider(body.provider):
            # Asked for by name and not configured here: the client's mistake (404), not an outage (503).
            raise NoRouteError(404, f"provider '{body.provider}' is not configured on this orchestrator")
        payload: dict[str, Any] = {"model": body.model}
        for key in ("temperature", "top_p", "max_tokens"):
            if getattr(body, key) is not None:
                payload[key] = getattr(body, key)
        check_sampling(payload, state.input_limits)
        payload = sampling.with_defaults(payload, settings)
        hits = await retrieve(body.message, body.use_rag, request)
        payload["messages"] = rag_messages(body.message, hits)
        sources = [
            Source(
                id=h.passage.doc_id,
                text=h.passage.text,
                score=round(h.score, 6),
                metadata=h.metadata,
                matched=list(h.matched),
                related=list(h.related),
                deciding=list(h.deciding),
            )
            for h in hits
        ]
        attempts: Attempts = request.state.attempts
        attempts.user = request.headers.get(USER_HEADER) or body.user
        # Fitting to the model may drop the least relevant passages (fitting.py); the sources follow.
        attempts.fit = FitHints(body.max_tokens is None, len(hits), lambda n: rag_messages(body.message, hits[:n]))
        if body.stream:
            endpoint, events = await _stream_or_cancel(state, provider, payload, attempts, request)
            if attempts.fit.passages_used is not None:
                sources = sources[: attempts.fit.passages_used]
            model = await state.upstream.model_of(endpoint)  # resolved (and cached) by the stream call
            response_id = state.feedback.answered(endpoint.provider, model, "chat", tenant_of(request))
            state.shadow.skip()
            return StreamingResponse(
                _chat_sse(events, model, endpoint.provider, sources, started, response_id),
                media_type="text/event-stream",
                headers={RESPONSE_ID_HEADER: response_id},
            )
        endpoint, data = await _complete_or_cancel(state, provider, payload, attempts, request)
        if attempts.fit.passages_used is not None:
            sources = sources[: attempts.fit.passages_used]
        text = data["choices"][0]["message"].get("content") or ""
        _account(endpoint.provider, str(data.get("model", endpoint.model)), data, started, attempts)
        response_id = state.answered("chat", endpoint, data, payload, attempts, tenant_of(request))
        return JSONResponse(
            ChatResponse(
                response=text,
                model=str(data.get("model") or endpoint.model),
                provider=endpoint.provider,
                processing_time=round(time.perf_counter() - started, 4),
                sources=sources,
                fallback_used=attempts.first_provider not in (None, endpoint.provider),
                response_id=response_id,
            ).model_dump(),
            headers={RESPONSE_ID_HEADER: response_id},
        )

    @app.post("/api/v1/generate", response_model=GenerateResponse)
    @app.post("/generate", response_model=GenerateResponse, include_in_schema=False)
    async def generate(body: GenerateRequest, request: Request) -> JSONResponse:
        """The old Gemini service's endpoint: the caller brings its own context."""
        started = time.perf_counter()
        check_message(body.query, "query")
        count_ignored("generate", body)
        context = "\n".join(body.context) if isinstance(body.context, list) else body.context
        if context and len(context) > settings.sdc_max_prompt_chars:
            raise InputError(f"context: {len(context)} characters; the limit is {settings.sdc_max_prompt_chars}", 413)
        keywords = check_keywords(body.korean_analysis)
        if keywords:
            context = f"{context or ''}\n핵심어: {', '.join(keywords)}".strip()
        payload = sampling.with_defaults({"messages": rag_messages(body.query, [], context), "model": None}, settings)
        attempts: Attempts = request.state.attempts
        attempts.user = request.headers.get(USER_HEADER)
        attempts.fit = FitHints(defaulted_max_tokens=True)
        provider = body.provider or settings.llm_service_type
        if body.provider not in (None, "auto") and not state.registry.for_provider(body.provider):
            raise NoRouteError(404, f"provider '{body.provider}' is not configured on this orchestrator")
        endpoint, data = await _complete_or_cancel(state, provider, payload, attempts, request)
        model = str(data.get("model") or endpoint.model)
        _account(endpoint.provider, model, data, started, attempts)
        response_id = state.answered("generate", endpoint, data, payload, attempts, tenant_of(request))
        return JSONResponse(
            GenerateResponse(
                response=data["choices"][0]["message"].get("content") or "",
                model_used=sampling.model_used(endpoint.provider, model),
                processing_time=round(time.perf_counter() - started, 4),
                korean_optimized=True,
            ).model_dump(),
            headers={RESPONSE_ID_HEADER: response_id},
        )

    # -- OpenAI-compatible ---------------------------------------------------------------------
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        served = await state.upstream.served_models()
        ids = {state.registry.model_id(e, served.get(e.name)) for e in state.registry.all("chat")}
        names = ["auto", *sorted(m for m in ids if m)]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "sdc"} for n in names],
        }

    @app.post(
        "/v1/chat/completions",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": OPENAI_CHAT_SCHEMA}}}
        },
    )
    async def chat_completions(request: Request) -> Response:
        try:
            raw = await request.json()
        except (ValueError, RecursionError):
            return error(400, "the request body is not valid JSON (or nested too deeply)")
        core, extras = openai_fields.accept(raw) if isinstance(raw, dict) else (raw, {})  # the README's table
        body = {**check_openai_chat(core, state.input_limits), **extras}
        provider = "auto"
        model = body.get("model")
        if model in ("ollama", "vllm", "transformers", "gemini"):
            provider, body = str(model), {**body, "model": None}
        attempts: Attempts = request.state.attempts
        user = request.headers.get(USER_HEADER) or body.get("user")
        attempts.user = str(user) if isinstance(user, str | int) and str(user) else None
        attempts.fit = FitHints(body.get("max_tokens") is None and body.get("max_completion_tokens") is None)
        body = sampling.with_defaults(body, settings)
        started = time.perf_counter()
        if body.get("stream") and state.upstream.waker and state.upstream.waker.would_hold(body.get("model")):
            # The model is at zero or starting: open the stream now, SSE comments while it is held.
            opening = state.upstream.stream(provider, body, attempts)
            return StreamingResponse(keep_alive(opening, settings.sdc_hold_keepalive_s), media_type="text/event-stream")
        if body.get("stream"):
            endpoint, events = await _stream_or_cancel(state, provider, body, attempts, request)
            model_name = await state.upstream.model_of(endpoint)
            response_id = state.feedback.answered(endpoint.provider, model_name, "openai", tenant_of(request))
            state.shadow.skip()

            async def relay() -> AsyncIterator[bytes]:
                first = True
                async for chunk in events:
                    if first:
                        metrics.TTFT.labels(endpoint.provider).observe(time.perf_counter() - started)
                        first = False
                    yield chunk

            return StreamingResponse(relay(), media_type="text/event-stream", headers={RESPONSE_ID_HEADER: response_id})
        endpoint, data = await _complete_or_cancel(state, provider, body, attempts, request)
        _account(endpoint.provider, str(data.get("model", endpoint.model)), data, started, attempts)
        response_id = state.answered("openai", endpoint, data, body, attempts, tenant_of(request))
        return JSONResponse({**data, "response_id": response_id}, headers={RESPONSE_ID_HEADER: response_id})

    # /v1/completions and /v1/embeddings (openai_routes.py)
    app.include_router(openai_routes.routes(settings, state.registry, state.router, state.upstream, state.input_limits))

    # -- migration: feedback and shadow comparison ------------------------------------------------
    @app.post("/api/v1/feedback")
    async def feedback(body: FeedbackIn, request: Request) -> JSONResponse:
        """Rate an answer (1 or -1) your tenant got; counted by the provider and model that gave it."""
        try:
            item = await asyncio.to_thread(
                state.feedback.rate, body.response_id, body.rating, body.comment, tenant_of(request)
            )
        except UnknownResponse:
            return error(404, f"no recent answer with response_id '{body.response_id}'")
        except AlreadyRated:
            return error(409, f"answer '{body.response_id}' is already rated")
        return JSONResponse({"response_id": item.response_id, "provider": item.provider, "model": item.model})

    @app.get("/api/v1/shadow/report")
    async def shadow_report() -> dict[str, Any]:
        """Pairs of (served answer, shadow answer): latency, tokens and Korean similarity per side."""
        return state.shadow.report()

    return app


def _warm_up_analysis() -> None:
    prepare("warm-up", "준비합니다. 연차 휴가는 3개월 후에 15일입니다. 끝났습니다.", {})
    semantic.space()  # the CoNg vectors' anchor basis: built once per process, before the first document


async def _unless_disconnected(task: asyncio.Task[Any], request: Request) -> Any:
    """Await `task`; cancel it if the client goes away (or this request is cancelled)."""
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise NoRouteError(499, "client closed the request")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _complete_or_cancel(
    state: State, provider: str, payload: dict[str, Any], attempts: Attempts, request: Request
) -> tuple[Any, dict[str, Any]]:
    """Run the upstream call; cancel it (closing the backend connection) if the client goes away."""
    task = asyncio.create_task(state.upstream.complete(provider, payload, attempts))
    result: tuple[Any, dict[str, Any]] = await _unless_disconnected(task, request)
    return result


async def _stream_or_cancel(
    state: State, provider: str, payload: dict[str, Any], attempts: Attempts, request: Request
) -> tuple[Endpoint, AsyncIterator[bytes]]:
    """Open the stream; a client gone before the first token cancels it, and the request's end frees its slot."""
    task = asyncio.create_task(state.upstream.stream(provider, payload, attempts))
    result: tuple[Endpoint, AsyncIterator[bytes]] = await _unless_disconnected(task, request)
    return result


def _account(provider: str, model: str, data: dict[str, Any], started: float, attempts: Attempts) -> None:
    metrics.REQUESTS.labels(provider, model, "ok").inc()
    metrics.LATENCY.labels(provider, model).observe(time.perf_counter() - started)
    usage.count(provider, data.get("usage"))  # in, out and cached tokens (a stream counts in upstream's relay)
    if attempts.first_provider and attempts.first_provider != provider:
        metrics.FALLBACKS.labels(attempts.first_provider, provider).inc()


async def _chat_sse(
    events: AsyncIterator[bytes],
    model: str,
    provider: str,
    sources: list[Source],
    started: float,
    response_id: str,
) -> AsyncIterator[bytes]:
    """The seed's chat, streamed: the sources first, then the backend's OpenAI chunks as they come."""
    meta = {
        "sources": [s.model_dump() for s in sources],
        "model": model,
        "provider": provider,
        "response_id": response_id,
    }
    yield f"event: sources\ndata: {sse_safe(json.dumps(meta, ensure_ascii=False))}\n\n".encode()
    first = True
    async for chunk in events:
        if first:
            metrics.TTFT.labels(provider).observe(time.perf_counter() - started)
            first = False
        yield chunk
