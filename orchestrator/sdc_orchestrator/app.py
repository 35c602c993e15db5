"""The orchestrator's HTTP app, assembled: services, middleware, error handlers and the routers of api/.

What each route does lives in api/ (one module per concern) over one answering pipeline (pipeline.py);
this module only puts them together and runs the background work (endpoint watch, engine scraping,
scaling down) for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI

from sdc_orchestrator import status
from sdc_orchestrator.api import completions, documents, errors, health, migration, openai, seed
from sdc_orchestrator.api.attempts import OVERHEAD_HEADER, AttemptsMiddleware
from sdc_orchestrator.api.deps import USER_HEADER
from sdc_orchestrator.api.errors import error, safe_text
from sdc_orchestrator.endpoint_watch import start_endpoint_watch
from sdc_orchestrator.gateway import GatewayMiddleware
from sdc_orchestrator.pipeline import RESPONSE_ID_HEADER
from sdc_orchestrator.rag import semantic
from sdc_orchestrator.rag.retriever import prepare
from sdc_orchestrator.routing import service as routing
from sdc_orchestrator.scaling.down import Autoscaler
from sdc_orchestrator.services import Services
from sdc_orchestrator.settings import OrchestratorSettings

# Names other modules and tests knew from here.
State = Services
OverheadMiddleware = AttemptsMiddleware
__all__ = [
    "OVERHEAD_HEADER",
    "RESPONSE_ID_HEADER",
    "USER_HEADER",
    "OverheadMiddleware",
    "State",
    "create_app",
    "error",
    "safe_text",
]


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    services = Services(settings)
    app = FastAPI(
        title="SDC orchestrator",
        version="0.1.0",
        lifespan=lambda _: _lifetime(services),
        summary="Korean RAG chat over local LLMs with cloud fallback; OpenAI-compatible.",
    )
    app.state.sdc = services
    errors.install(app)
    app.add_middleware(AttemptsMiddleware)
    # Added last, so outermost: nothing runs for a request without a key, over its limits or too large.
    app.add_middleware(
        GatewayMiddleware,
        keys=services.keys,
        limits=services.limits,
        max_body_bytes=settings.sdc_max_body_bytes,
        admin_names=settings.admin_names(),
    )
    app.include_router(health.router)
    app.include_router(status.routes(settings, services.registry, services.router))  # /readyz, /api/v1/status
    app.include_router(documents.router)
    app.include_router(seed.router)
    app.include_router(openai.router)
    app.include_router(completions.router)  # /v1/completions, /v1/embeddings
    app.include_router(migration.router)
    return app


@contextlib.asynccontextmanager
async def _lifetime(services: Services) -> AsyncIterator[None]:
    settings = services.settings
    # Indexing and retrieval run in worker threads. A cancelled upload stops at its next step, but a
    # step already running in a thread runs to its end: a bounded pool caps how much such work
    # can pile up, whatever clients do (work not yet started is dropped when cancelled).
    workers = ThreadPoolExecutor(settings.sdc_worker_threads, thread_name_prefix="sdc-work")
    asyncio.get_running_loop().set_default_executor(workers)
    # Load Kiwi and the analyser's models before serving: loading holds the GIL for seconds (8 s
    # measured), which would stall health checks and even the SIGTERM handler inside the first upload.
    await asyncio.to_thread(_warm_up_analysis)
    tasks = [
        routing.start(services.registry, services.router),  # engine signals of every published replica
        start_endpoint_watch(settings, services.registry),  # published endpoints within a second
    ]
    waker = services.upstream.waker
    if waker is not None and waker.scale is not None:
        down = Autoscaler(services.registry, services.router)  # spec.autoscaling: up on queues, down after idle
        tasks.append(asyncio.create_task(down.run(waker.scale, settings.sdc_scale_down_interval_s)))
    yield
    for task in tasks:
        if task is not None:
            task.cancel()
    await services.close()
    workers.shutdown(wait=False, cancel_futures=True)


def _warm_up_analysis() -> None:
    prepare("warm-up", "준비합니다. 연차 휴가는 3개월 후에 15일입니다. 끝났습니다.", {})
    semantic.space()  # the CoNg vectors' anchor basis: built once per process, before the first document
