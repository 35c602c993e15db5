"""One OpenAI-protocol client path for every backend, with the router's retry loop.

A single shared aiohttp session (connection pooling, explicit timeouts). Not
httpx: its connection pool does work proportional to the open connections on
every request, and under 64+ concurrent requests the orchestrator's throughput
collapsed to a fraction of what the same code reaches with aiohttp (measured in
benchmarks/orchestrator_overhead.py). The loop
walks the router's groups in order; each attempt has its own timeout and the
whole request a total one. Streaming: the loop runs until a backend sends its
first event; from then on the stream is committed to that backend, and a
failure mid-stream ends it with an explicit error event, never a silent cut.

What a client sees of a failure names the provider, the endpoint's name and
the model, never an address: hosts, IPs and ports go to the log only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from sdc_orchestrator import metrics, ollama_native, openai_fields, sse, usage
from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.discovery import ModelDiscovery
from sdc_orchestrator.failures import ClientRequestError, NoRouteError
from sdc_orchestrator.fitting import FitError, FitHints, Fitter, resolve_name
from sdc_orchestrator.router import Router, Slot, UpstreamError, by_provider, classify_status
from sdc_orchestrator.routing.policy import hint
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.status import no_model_message

CHAT_PATH = "chat/completions"  # the default route; others (completions) are relayed as they are, never fitted

if TYPE_CHECKING:
    from sdc_orchestrator.scaling.waker import Waker

__all__ = ["ATTEMPT_ERRORS", "CHAT_PATH", "Attempts", "ClientRequestError", "NoRouteError", "Upstream", "public_error"]
log = logging.getLogger("sdc_orchestrator.upstream")
T = TypeVar("T")
# What one attempt may fail with that another endpoint may not (public_error names it for the client).
ATTEMPT_ERRORS = (aiohttp.ClientError, OSError, UpstreamError, ValueError, KeyError, TimeoutError, StopAsyncIteration)


@dataclass
class Attempts:
    """One request's attempts: what was tried, time spent upstream, and the slots it holds."""

    tried: list[dict[str, str]] = field(default_factory=list)
    upstream_s: float = 0.0
    first_provider: str | None = None
    started: float = field(default_factory=time.perf_counter)
    slots: list[tuple[Slot, aiohttp.ClientResponse | None]] = field(default_factory=list)
    user: str | None = None  # X-SDC-User / OpenAI `user`: keeps the user on one endpoint
    chosen: Endpoint | None = None  # the endpoint (replica) that answered: named in X-SDC-Replica
    fit: FitHints | None = None  # how the route lets its request be fitted to a model (fitting.py)

    def failed(self, err: UpstreamError) -> None:
        self.tried.append(
            {
                "endpoint": err.endpoint.name,
                "provider": err.endpoint.provider,
                "model": err.endpoint.model or "",
                "error": str(err),
            }
        )

    def hold(self, slot: Slot, resp: aiohttp.ClientResponse | None = None) -> None:
        self.slots.append((slot, resp))

    def close(self) -> None:
        """The request is over: release what no path released (the client left or was cancelled)."""
        for slot, resp in self.slots:
            if slot.open:
                slot.release("abandoned")
                if resp is not None:
                    resp.close()


def public_error(endpoint: Endpoint, err: BaseException) -> UpstreamError:
    """An UpstreamError whose message is safe to show; the full error goes to the log."""
    if isinstance(err, UpstreamError):
        return err
    if isinstance(err, TimeoutError):
        return UpstreamError(endpoint, "timed out", timeout=True)
    if isinstance(err, StopAsyncIteration):
        return UpstreamError(endpoint, "stream ended before any event")
    log.warning("attempt on %s failed: %s: %s", endpoint.name, type(err).__name__, err)
    if isinstance(err, aiohttp.ClientConnectionError | OSError):
        return UpstreamError(endpoint, "connection failed")
    if isinstance(err, ValueError | KeyError):
        return UpstreamError(endpoint, "the backend's answer was not valid JSON of the OpenAI protocol")
    return UpstreamError(endpoint, f"the call failed ({type(err).__name__})")


class Upstream:
    """The upstream call: which endpoints may answer (groups), then one attempt after another on them.

    `complete` and `stream` share one attempt context (`_each_attempt`): the slot, the attempt timeout, the
    time spent upstream, and what a failure means (a refusal goes back to the client, anything else cools
    the endpoint and tries the next). They differ only in what an attempt sends and keeps (`send`).
    """

    def __init__(self, settings: OrchestratorSettings, registry: EndpointRegistry, router: Router) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router
        self._session: aiohttp.ClientSession | None = None
        self.fitter = Fitter(lambda: self.http, self.headers, ollama_num_ctx=settings.ollama_num_ctx)
        self.discovery = ModelDiscovery(
            registry, lambda: self.http, self.headers, self.fitter, settings.sdc_model_discovery_retry_s
        )
        self.waker: Waker | None = None  # scale from zero (scaling/waker.py); None: a model at zero is a 404

    @property
    def http(self) -> aiohttp.ClientSession:
        """The shared session, made on first use (it must belong to the running event loop)."""
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.settings.sdc_connect_timeout_s,
                sock_read=self.settings.sdc_attempt_timeout_s,
            )
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}

    # -- models (discovery.py) ---------------------------------------------------------------
    async def served_models(self) -> dict[str, str | None]:
        """Endpoint name -> model; asks a backend without a configured model name (failures are remembered)."""
        return await self.discovery.served()

    def known_model(self, endpoint: Endpoint) -> str:
        """The endpoint's model if configured or already discovered, else ''."""
        return self.discovery.known(endpoint)

    async def model_of(self, endpoint: Endpoint) -> str:
        """The model to ask for (discovery.py)."""
        return await self.discovery.model_of(endpoint)

    # -- endpoint selection ---------------------------------------------------------------
    async def groups(
        self, provider: str, model: str | None, skip: frozenset[str] = frozenset()
    ) -> list[list[Endpoint]]:
        """The endpoint groups to try; `skip`: providers that do not serve the route (Gemini's /completions)."""
        if provider == "none":  # LLM_SERVICE_TYPE=none: no preferred provider, every published endpoint
            provider = "auto"
        grouped = by_provider(self.registry.all("chat"), skip)
        if model and model != "auto":
            grouped = {**grouped, "_model": await self._serving_or_held(model, skip)}
            provider = "_model"
        elif provider != "auto" and not grouped.get(provider):
            raise NoRouteError(503, f"provider '{provider}' has no endpoint configured")
        return self.router.plan_groups(provider, grouped, self.settings.fallback_order())

    async def _serving(self, model: str, skip: frozenset[str]) -> list[Endpoint]:
        """The chat endpoints serving `model`; by the name rule (`gemma-2-9b-it` finds `google/gemma-2-9b-it`,
        fitting.resolve_name) when none has that exact name."""
        served = await self.served_models()
        chats = [e for e in self.registry.all("chat") if e.provider not in skip]
        found = [e for e in chats if self.registry.model_id(e, served.get(e.name)) == model]
        if not found:
            ids = {e.name: self.registry.model_id(e, served.get(e.name)) or "" for e in chats}
            name = resolve_name(model, sorted(set(ids.values()) - {""}))
            found = [e for e in chats if name and ids[e.name] == name]
        return found

    async def _serving_or_held(self, model: str, skip: frozenset[str]) -> list[Endpoint]:
        matching = await self._serving(model, skip)
        if not matching and self.waker is not None and (dormant := self.registry.dormant(model)) is not None:
            # At zero or starting: held until a replica is published ready (429/503 past the bounds).
            await self.waker.hold(model, dormant, lambda: _nonempty(self._serving(model, skip)))
            matching = await self._serving(model, skip)
        if not matching:
            raise NoRouteError(404, f"model '{model[:256]}' is not served; GET /v1/models lists the models")
        return matching

    # -- the attempt context ----------------------------------------------------------------------
    async def _each_attempt(
        self,
        groups: list[list[Endpoint]],
        payload: dict[str, Any],
        attempts: Attempts,
        send: Callable[[Endpoint, Slot], Awaitable[T]],
    ) -> tuple[Endpoint, Slot, T]:
        """Try `send` on each candidate until one succeeds; return it with its slot (still held) and result."""
        candidates = self.router.candidates(
            groups, self.settings.sdc_max_attempts, attempts.user, hint(payload.get("messages"))
        )
        for endpoint in candidates:
            attempts.first_provider = attempts.first_provider or endpoint.provider
            slot = self.router.acquire(endpoint)
            attempts.hold(slot)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.settings.sdc_attempt_timeout_s):
                    result = await send(endpoint, slot)
            except FitError as exc:
                slot.release("abandoned")  # the request cannot fit this model: the client's to change
                raise ClientRequestError(exc.status, exc.body(), own=True) from None
            except ATTEMPT_ERRORS as exc:
                err = public_error(endpoint, exc)
                if not err.retryable:
                    raise self._refused(slot, err) from None
                self._record_failure(slot, err, attempts)
                continue
            except asyncio.CancelledError:
                slot.release("abandoned")  # the client left: not the backend's fault
                raise
            finally:
                attempts.upstream_s += time.perf_counter() - started
            attempts.chosen = endpoint
            return endpoint, slot, result
        raise self._exhausted(attempts)

    async def _body(
        self, endpoint: Endpoint, payload: dict[str, Any], fit: FitHints | None, path: str
    ) -> dict[str, Any]:
        """What `endpoint` is sent: its model named, fields it does not take dropped, fitted to it (chat only)."""
        body = openai_fields.for_provider({**payload, "model": await self.model_of(endpoint)}, endpoint.provider)
        return await self.fitter.fit(endpoint, body, fit) if path == CHAT_PATH else body

    async def _post(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        path: str = CHAT_PATH,
        opened: Callable[[aiohttp.ClientResponse], None] | None = None,
    ) -> tuple[aiohttp.ClientResponse, bool]:
        """POST; a refusal naming a chat-template rule is learned and the request sent once more, folded.

        Returns the open response (status below 400: the caller reads and closes it) and whether it came
        from Ollama's own route (ollama_native). `opened` sees every response as it opens, so a cancelled
        request can close its connection (Attempts.hold).
        """
        for attempt in range(2):
            url, sent = self._chat_request(endpoint, body, path)
            resp = await self.http.post(url, json=sent, headers=self.headers(endpoint))
            if opened is not None:
                opened(resp)
            if resp.status < 400:
                return resp, sent is not body
            try:
                err = await self._status_error(endpoint, resp)
            finally:
                resp.release()
            if (missing := self.fitter.missing_model(endpoint, body.get("model"), err.status, err.body)) is not None:
                raise UpstreamError(endpoint, "model not found", status=404, retryable=False, body=missing, own=True)
            folded = self.fitter.learn_refusal(endpoint, body, err.body) if attempt == 0 else None
            if folded is None:
                raise err
            body = folded
        raise AssertionError("unreachable")

    def _chat_request(
        self, endpoint: Endpoint, body: dict[str, Any], path: str = CHAT_PATH
    ) -> tuple[str, dict[str, Any]]:
        """Where a request goes and what is sent: OpenAI's route (`path`), or for a chat Ollama's own route with
        the context (ollama_native)."""
        native = self.fitter.native_ollama(endpoint) if path == CHAT_PATH else None
        if native is None:
            return f"{endpoint.base_url}/{path}", body
        return native[0], ollama_native.request(body, native[1])

    async def _status_error(self, endpoint: Endpoint, resp: aiohttp.ClientResponse) -> UpstreamError:
        body: Any
        raw = await resp.read()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = {"error": {"message": raw[:500].decode(errors="replace")}}
        retryable = classify_status(resp.status)
        return UpstreamError(endpoint, f"HTTP {resp.status}", status=resp.status, retryable=retryable, body=body)

    def _exhausted(self, attempts: Attempts) -> NoRouteError:
        if not attempts.tried:
            if not self.registry.all("chat"):  # nothing configured or published at all: say what to do
                return NoRouteError(503, no_model_message(self.settings))
            return NoRouteError(503, "no endpoint is available for this request")
        if all("timed out" in t["error"] for t in attempts.tried):
            return NoRouteError(504, "every backend timed out", attempts.tried)
        return NoRouteError(502, "every backend failed", attempts.tried)

    def _record_failure(self, slot: Slot, err: UpstreamError, attempts: Attempts) -> None:
        attempts.failed(err)
        kind = "timeout" if err.timeout else (f"http_{err.status}" if err.status else "connect")
        metrics.ATTEMPT_ERRORS.labels(slot.endpoint.provider, kind).inc()
        if slot.release("failed"):
            metrics.COOLDOWNS.labels(slot.endpoint.name).inc()

    def _refused(self, slot: Slot, err: UpstreamError) -> ClientRequestError:
        """A 4xx any backend would give: the backend is fine, the request is not."""
        slot.release("abandoned")
        return ClientRequestError(err.status or 400, err.body, own=err.own)

    # -- non-streaming ------------------------------------------------------------------------
    async def complete(
        self,
        provider: str,
        payload: dict[str, Any],
        attempts: Attempts,
        path: str = CHAT_PATH,
        skip: frozenset[str] = frozenset(),
    ) -> tuple[Endpoint, dict[str, Any]]:
        groups = await self.groups(provider, payload.get("model"), skip)

        async def send(endpoint: Endpoint, _: Slot) -> dict[str, Any]:
            body = await self._body(endpoint, {**payload, "stream": False}, attempts.fit, path)
            data = await self._chat_once(endpoint, body, path)
            if not isinstance(data, dict) or not data.get("choices"):
                raise ValueError("no choices in the answer")
            return data

        try:
            async with asyncio.timeout(self.settings.sdc_total_timeout_s):
                endpoint, slot, data = await self._each_attempt(groups, payload, attempts, send)
        except TimeoutError:
            attempts.tried.append({"endpoint": "*", "provider": "*", "error": "timed out (total request timeout)"})
            raise NoRouteError(504, "the request timed out", attempts.tried) from None
        slot.release("ok")
        return endpoint, data

    async def fitted_chat(self, endpoint: Endpoint, body: dict[str, Any]) -> Any:
        """One chat on one endpoint, fitted to its model (a limit is clamped, never refused): the shadow's path."""
        return await self._chat_once(endpoint, await self.fitter.fit(endpoint, body, FitHints(True)))

    async def _chat_once(self, endpoint: Endpoint, body: dict[str, Any], path: str = CHAT_PATH) -> Any:
        """One POST (folded once if a template refuses it), its JSON answer in OpenAI's shape."""
        resp, native = await self._post(endpoint, body, path)
        async with resp:
            data = await resp.json(content_type=None)
        return ollama_native.response(data) if native else data

    # -- streaming -------------------------------------------------------------------------------
    async def stream(
        self,
        provider: str,
        payload: dict[str, Any],
        attempts: Attempts,
        path: str = CHAT_PATH,
        skip: frozenset[str] = frozenset(),
    ) -> tuple[Endpoint, AsyncIterator[bytes]]:
        """Open a stream on the first backend that sends an event; return it and the remaining events."""
        groups = await self.groups(provider, payload.get("model"), skip)
        streamed, wants_usage = usage.stream_payload(payload)

        async def send(endpoint: Endpoint, slot: Slot) -> tuple[aiohttp.ClientResponse, str, AsyncIterator[str]]:
            body = await self._body(endpoint, streamed, attempts.fit, path)
            resp, native = await self._post(endpoint, body, path, lambda opened: attempts.hold(slot, opened))
            try:
                events = ollama_native.sse_lines(sse.lines(resp)) if native else sse.response_events(resp)
                return resp, await sse.next_event(events), events
            except BaseException:
                resp.close()
                raise

        endpoint, slot, (resp, first, events) = await self._each_attempt(groups, payload, attempts, send)
        return endpoint, self._relay(slot, resp, first, events, attempts, wants_usage)

    async def _relay(
        self,
        slot: Slot,
        resp: aiohttp.ClientResponse,
        first: str,
        events: AsyncIterator[str],
        attempts: Attempts,
        wants_usage: bool = True,
    ) -> AsyncIterator[bytes]:
        """The rest of a stream. Ends as ok ([DONE]), failed (the backend broke it) or abandoned (the client left).

        Usage chunks are counted (usage.py); a usage-only chunk reaches only a client that asked for usage.
        """
        endpoint = slot.endpoint
        outcome: str = "abandoned"
        try:
            event = first
            while True:
                reported, usage_only = usage.of_event(event)
                if reported is not None:
                    usage.count(endpoint.provider, reported)
                if wants_usage or not usage_only:
                    yield sse.frame(event)
                if sse.is_done(event):
                    outcome = "ok"
                    return
                try:
                    event = await asyncio.wait_for(sse.next_event(events), self.settings.sdc_attempt_timeout_s)
                except StopAsyncIteration:
                    break
            raise UpstreamError(endpoint, "the backend closed the stream before [DONE]")
        except (aiohttp.ClientError, OSError, UpstreamError, TimeoutError) as exc:
            outcome = "failed"
            err = public_error(endpoint, exc)
            metrics.ATTEMPT_ERRORS.labels(endpoint.provider, "mid_stream").inc()
            yield sse.error(f"{endpoint.provider} backend {endpoint.name} failed mid-stream: {err}", "upstream_error")
        finally:
            self._stream_ended(slot, resp, outcome, attempts)

    def _stream_ended(self, slot: Slot, resp: aiohttp.ClientResponse, outcome: str, attempts: Attempts) -> None:
        endpoint = slot.endpoint
        if outcome == "ok":
            resp.release()
            slot.release("ok")
        else:
            resp.close()  # a broken or abandoned stream's connection must not be reused
            if slot.release("failed" if outcome == "failed" else "abandoned"):
                metrics.COOLDOWNS.labels(endpoint.name).inc()
        model = self.known_model(endpoint)
        label = {"ok": "ok", "failed": "stream_error"}.get(outcome, "client_closed")
        metrics.REQUESTS.labels(endpoint.provider, model, label).inc()
        metrics.STREAMS.labels(endpoint.provider, label).inc()
        if outcome == "ok":
            metrics.LATENCY.labels(endpoint.provider, model).observe(time.perf_counter() - attempts.started)


async def _nonempty(found: Any) -> bool:
    return bool(await found)
