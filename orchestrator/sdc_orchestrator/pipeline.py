"""One answering pipeline for every chat route: the provider check, sampling defaults, the upstream call
(cancelled when the client leaves), accounting, feedback and the shadow copy.

The routes (api/seed.py, api/openai.py) differ in what they take and how they write an answer; what
happens between is here, once. A stream for a model scaling from zero is opened at once and kept alive
with SSE comments while the model is held (scaling/waker.keep_alive), on every chat route alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sdc_orchestrator import metrics, sampling, usage
from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.failures import NoRouteError
from sdc_orchestrator.feedback import FeedbackStore
from sdc_orchestrator.scaling.waker import keep_alive
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.shadow import Shadow, side
from sdc_orchestrator.upstream import Attempts, Upstream

T = TypeVar("T")
RESPONSE_ID_HEADER = "X-SDC-Response-Id"


async def until_disconnected(work: Awaitable[T], disconnected: Callable[[], Awaitable[bool]]) -> T:
    """Await `work`; cancel it (closing a backend connection it holds) if the client goes away (499)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await disconnected():
                raise NoRouteError(499, "client closed the request")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class Call:
    """One chat request as the pipeline sees it: its route (feedback's label), tenant and attempts."""

    route: str
    tenant: str
    attempts: Attempts
    disconnected: Callable[[], Awaitable[bool]]
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Answer:
    endpoint: Endpoint
    data: dict[str, Any]
    response_id: str

    @property
    def model(self) -> str:
        return str(self.data.get("model") or self.endpoint.model)

    @property
    def text(self) -> str:
        return str(self.data["choices"][0]["message"].get("content") or "")


@dataclass
class Opened:
    """A stream whose backend sent its first event: the events to relay (timed for TTFT)."""

    endpoint: Endpoint
    model: str
    response_id: str
    events: AsyncIterator[bytes]


Frame = Callable[[Opened], AsyncIterator[bytes]]


class Pipeline:
    def __init__(
        self,
        settings: OrchestratorSettings,
        registry: EndpointRegistry,
        upstream: Upstream,
        feedback: FeedbackStore,
        shadow: Shadow,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.upstream = upstream
        self.feedback = feedback
        self.shadow = shadow

    def provider(self, asked: str | None) -> str:
        """The provider to route to; one asked for by name must be configured here."""
        if asked not in (None, "auto") and not self.registry.for_provider(asked):
            # Asked for by name and not configured here: the client's mistake (404), not an outage (503).
            raise NoRouteError(404, f"provider '{asked}' is not configured on this orchestrator")
        return asked or self.settings.llm_service_type

    def with_defaults(self, payload: dict[str, Any]) -> dict[str, Any]:
        return sampling.with_defaults(payload, self.settings)

    def would_hold(self, payload: dict[str, Any]) -> bool:
        """Whether the model asked for is at zero or starting (its request will be held: scaling/)."""
        waker = self.upstream.waker
        return waker is not None and waker.would_hold(payload.get("model"))

    async def answer(self, call: Call, provider: str, payload: dict[str, Any]) -> Answer:
        """Complete, account, record (feedback and shadow)."""
        work = self.upstream.complete(provider, payload, call.attempts)
        endpoint, data = await until_disconnected(work, call.disconnected)
        answer = Answer(endpoint, data, "")
        self.account(endpoint.provider, answer.model, data, call.started, call.attempts.first_provider)
        answer.response_id = self.feedback.answered(endpoint.provider, answer.model, call.route, call.tenant)
        try:
            text = answer.text
        except (KeyError, IndexError, TypeError, AttributeError):
            return answer
        # The primary side's latency is its time upstream, like the shadow's: retrieval is not compared.
        primary = side(endpoint.provider, answer.model, call.attempts.upstream_s, data)
        self.shadow.submit(payload, primary, text, call.tenant)
        return answer

    async def stream(
        self, call: Call, provider: str, payload: dict[str, Any], frame: Frame
    ) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """The body and headers of a streamed answer; `frame` writes the opened stream as the route's events.

        A model at zero or starting: the stream opens now (no response id header: it is not known yet) and
        gets SSE comments while the request is held; otherwise it opens once the backend sent an event.
        """
        if self.would_hold(payload):

            async def opening() -> tuple[Endpoint, AsyncIterator[bytes]]:
                opened = await self._open(call, provider, payload)
                return opened.endpoint, frame(opened)

            return keep_alive(opening(), self.settings.sdc_hold_keepalive_s), {}
        opened = await until_disconnected(self._open(call, provider, payload), call.disconnected)
        return frame(opened), {RESPONSE_ID_HEADER: opened.response_id}

    async def _open(self, call: Call, provider: str, payload: dict[str, Any]) -> Opened:
        endpoint, events = await self.upstream.stream(provider, payload, call.attempts)
        model = await self.upstream.model_of(endpoint)  # resolved (and cached) by the stream call
        response_id = self.feedback.answered(endpoint.provider, model, call.route, call.tenant)
        self.shadow.skip(call.tenant)  # a streamed text is never assembled here, so never compared
        return Opened(endpoint, model, response_id, _first_token_timed(events, endpoint.provider, call.started))

    def account(
        self, provider: str, model: str, data: dict[str, Any], started: float, first: str | None = None
    ) -> None:
        """An answer served: its request, latency and tokens; a fallback if `first` (tried first) was another."""
        metrics.REQUESTS.labels(provider, model, "ok").inc()
        metrics.LATENCY.labels(provider, model).observe(time.perf_counter() - started)
        usage.count(provider, data.get("usage"))  # in, out and cached tokens (a stream counts in upstream's relay)
        if first and first != provider:
            metrics.FALLBACKS.labels(first, provider).inc()


async def _first_token_timed(events: AsyncIterator[bytes], provider: str, started: float) -> AsyncIterator[bytes]:
    """The events, with the time to the first one observed (sdc_orchestrator_ttft_seconds)."""
    first = True
    async for chunk in events:
        if first:
            metrics.TTFT.labels(provider).observe(time.perf_counter() - started)
            first = False
        yield chunk
