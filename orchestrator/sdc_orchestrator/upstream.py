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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from sdc_orchestrator import metrics, ollama_native, openai_fields, usage
from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.fitting import FitError, FitHints, Fitter, resolve_name
from sdc_orchestrator.router import Router, Slot, UpstreamError, classify_status
from sdc_orchestrator.routing.policy import Hint, hint
from sdc_orchestrator.sampling import DEFAULT_MODEL_NAME
from sdc_orchestrator.sanitize import sse_safe
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.status import no_model_message

CHAT_PATH = "chat/completions"  # the default route; others (completions) are relayed as they are, never fitted

if TYPE_CHECKING:
    from sdc_orchestrator.scaling.waker import Waker

log = logging.getLogger("sdc_orchestrator.upstream")


class NoRouteError(Exception):
    """Nothing can serve: unknown model or provider, or every attempt failed."""

    def __init__(
        self, status: int, message: str, tried: list[dict[str, str]] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tried = tried or []
        self.retry_after = retry_after  # seconds, sent as Retry-After (a model scaling from zero)


class ClientRequestError(Exception):
    """The backend refused the request itself (a 4xx that another backend would refuse too).

    `own`: the body is the orchestrator's own words (a request that cannot fit the model, a model the backend
    does not have, naming what it has), shown as written; a backend's own body is rewritten (backend_errors).
    """

    def __init__(self, status: int, body: Any, *, own: bool = False) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.own = own


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
    log.warning("attempt on %s failed: %s: %s", endpoint.name, type(err).__name__, err)
    if isinstance(err, aiohttp.ClientConnectionError | OSError):
        return UpstreamError(endpoint, "connection failed")
    if isinstance(err, ValueError | KeyError):
        return UpstreamError(endpoint, "the backend's answer was not valid JSON of the OpenAI protocol")
    return UpstreamError(endpoint, f"the call failed ({type(err).__name__})")


class Upstream:
    def __init__(self, settings: OrchestratorSettings, registry: EndpointRegistry, router: Router) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router
        self._session: aiohttp.ClientSession | None = None
        self._models: dict[str, str] = {}
        self._discovery_failed: dict[str, float] = {}
        self.fitter = Fitter(lambda: self.http, self.headers, ollama_num_ctx=settings.ollama_num_ctx)
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

    # -- endpoint selection ---------------------------------------------------------------
    async def served_models(self) -> dict[str, str | None]:
        """Endpoint name -> model; asks a backend without a configured model name (failures are remembered)."""
        out: dict[str, str | None] = {}
        for endpoint in self.registry.all("chat"):
            try:
                out[endpoint.name] = await self.model_of(endpoint)
            except UpstreamError:
                out[endpoint.name] = endpoint.model
        return out

    async def groups(
        self, provider: str, model: str | None, skip: frozenset[str] = frozenset()
    ) -> list[list[Endpoint]]:
        """The endpoint groups to try; `skip`: providers that do not serve the route (Gemini's /completions)."""
        if provider == "none":  # LLM_SERVICE_TYPE=none: no preferred provider, every published endpoint
            provider = "auto"
        by_provider: dict[str, list[Endpoint]] = {}
        for endpoint in self.registry.all("chat"):
            if endpoint.provider not in skip:
                by_provider.setdefault(endpoint.provider, []).append(endpoint)
        if model and model != "auto":

            async def serving() -> list[Endpoint]:
                served = await self.served_models()
                chats = [e for e in self.registry.all("chat") if e.provider not in skip]
                found = [e for e in chats if self.registry.model_id(e, served.get(e.name)) == model]
                if not found:  # the name rule: `gemma-2-9b-it` finds `google/gemma-2-9b-it` (fitting.resolve_name)
                    ids = {e.name: self.registry.model_id(e, served.get(e.name)) or "" for e in chats}
                    name = resolve_name(model, sorted(set(ids.values()) - {""}))
                    found = [e for e in chats if name and ids[e.name] == name]
                return found

            matching = await serving()
            if not matching and self.waker is not None and (dormant := self.registry.dormant(model)) is not None:
                # At zero or starting: held until a replica is published ready (429/503 past the bounds).
                await self.waker.hold(model, dormant, lambda: _nonempty(serving()))
                matching = await serving()
            if not matching:
                raise NoRouteError(404, f"model '{model[:256]}' is not served; GET /v1/models lists the models")
            by_provider = {**by_provider, "_model": matching}
            provider = "_model"
        elif provider != "auto" and not by_provider.get(provider):
            raise NoRouteError(503, f"provider '{provider}' has no endpoint configured")
        return self.router.plan_groups(provider, by_provider, self.settings.fallback_order())

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}

    def known_model(self, endpoint: Endpoint) -> str:
        """The endpoint's model if configured or already discovered, else ''."""
        return endpoint.model or self._models.get(endpoint.name, "")

    async def model_of(self, endpoint: Endpoint) -> str:
        """The model to ask for; discovered once per endpoint, and a failed discovery is not retried for a while.

        A configured name is matched to what the backend serves (`gemma-2-9b-it` -> `google/gemma-2-9b-it`).
        """
        if endpoint.model:
            return await self.fitter.served_name(endpoint, endpoint.model)
        if endpoint.name in self._models:
            return self._models[endpoint.name]
        if time.monotonic() < self._discovery_failed.get(endpoint.name, 0.0):
            raise UpstreamError(endpoint, "model discovery failed recently")
        try:
            async with self.http.get(
                f"{endpoint.base_url}/models", headers=self.headers(endpoint), timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                if resp.status in (404, 405):  # no /v1/models: the guide's default name
                    self._models[endpoint.name] = DEFAULT_MODEL_NAME
                    return DEFAULT_MODEL_NAME
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            listed = data.get("data") or []
            self._models[endpoint.name] = str(listed[0]["id"]) if listed else DEFAULT_MODEL_NAME
        except (
            aiohttp.ClientError,
            OSError,
            TimeoutError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
        ) as err:
            log.warning("model discovery on %s failed: %s: %s", endpoint.name, type(err).__name__, err)
            self._discovery_failed[endpoint.name] = time.monotonic() + self.settings.sdc_model_discovery_retry_s
            raise UpstreamError(endpoint, "model discovery failed") from None
        return self._models[endpoint.name]

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

    def _refused(self, slot: Slot, err: UpstreamError, exc: BaseException) -> ClientRequestError:
        """A 4xx any backend would give: the backend is fine, the request is not."""
        slot.release("abandoned")
        return ClientRequestError(err.status or 400, err.body, own=err.own)

    async def _candidates(
        self, groups: list[list[Endpoint]], user: str | None = None, request: Hint | None = None
    ) -> AsyncIterator[Endpoint]:
        """Endpoints to try, in order: up to max_attempts of the first group, then each fallback's."""
        tried: set[str] = set()
        for index, group in enumerate(groups):
            per_group = self.settings.sdc_max_attempts if index == 0 else len(group)
            for _ in range(per_group):
                endpoint = self.router.pick(group, tried, user, request)
                if endpoint is None:
                    break
                tried.add(endpoint.name)
                yield endpoint

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
        try:
            async with asyncio.timeout(self.settings.sdc_total_timeout_s):
                async for endpoint in self._candidates(groups, attempts.user, hint(payload.get("messages"))):
                    attempts.first_provider = attempts.first_provider or endpoint.provider
                    slot = self.router.acquire(endpoint)
                    attempts.hold(slot)
                    started = time.perf_counter()
                    try:
                        async with asyncio.timeout(self.settings.sdc_attempt_timeout_s):
                            body = openai_fields.for_provider(
                                {**payload, "model": await self.model_of(endpoint), "stream": False}, endpoint.provider
                            )
                            if path == CHAT_PATH:
                                body = await self.fitter.fit(endpoint, body, attempts.fit)
                            data: dict[str, Any] = await self._chat_once(endpoint, body, path)
                            if not isinstance(data, dict) or not data.get("choices"):
                                raise ValueError("no choices in the answer")
                    except FitError as exc:
                        slot.release("abandoned")  # the request cannot fit this model: the client's to change
                        raise ClientRequestError(exc.status, exc.body(), own=True) from None
                    except (aiohttp.ClientError, OSError, UpstreamError, ValueError, KeyError, TimeoutError) as exc:
                        err = public_error(endpoint, exc)
                        if not err.retryable:
                            raise self._refused(slot, err, exc) from None
                        self._record_failure(slot, err, attempts)
                        continue
                    except asyncio.CancelledError:
                        slot.release("abandoned")  # the client left: not the backend's fault
                        raise
                    finally:
                        attempts.upstream_s += time.perf_counter() - started
                    slot.release("ok")
                    attempts.chosen = endpoint
                    return endpoint, data
        except TimeoutError:
            attempts.tried.append({"endpoint": "*", "provider": "*", "error": "timed out (total request timeout)"})
            raise NoRouteError(504, "the request timed out", attempts.tried) from None
        raise self._exhausted(attempts)

    async def fitted_chat(self, endpoint: Endpoint, body: dict[str, Any]) -> Any:
        """One chat on one endpoint, fitted to its model (a limit is clamped, never refused): the shadow's path."""
        return await self._chat_once(endpoint, await self.fitter.fit(endpoint, body, FitHints(True)))

    async def _chat_once(self, endpoint: Endpoint, body: dict[str, Any], path: str = CHAT_PATH) -> Any:
        """POST a chat; a refusal naming a chat-template rule is learned and the chat sent once more, folded."""
        for attempt in range(2):
            url, sent = self._chat_request(endpoint, body, path)
            async with self.http.post(url, json=sent, headers=self.headers(endpoint)) as resp:
                if resp.status < 400:
                    data = await resp.json(content_type=None)
                    return ollama_native.response(data) if sent is not body else data
                err = await self._status_error(endpoint, resp)
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
        async for endpoint in self._candidates(groups, attempts.user, hint(payload.get("messages"))):
            attempts.first_provider = attempts.first_provider or endpoint.provider
            slot = self.router.acquire(endpoint)
            attempts.hold(slot)
            started = time.perf_counter()
            body = openai_fields.for_provider(dict(streamed), endpoint.provider)
            resp: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(self.settings.sdc_attempt_timeout_s):
                    body["model"] = await self.model_of(endpoint)
                    if path == CHAT_PATH:
                        body = await self.fitter.fit(endpoint, body, attempts.fit)
                    retried = False
                    while True:
                        url, sent = self._chat_request(endpoint, body, path)
                        resp = await self.http.post(url, json=sent, headers=self.headers(endpoint))
                        attempts.hold(slot, resp)  # so a cancelled request closes this connection too
                        if resp.status < 400:
                            break
                        err = await self._status_error(endpoint, resp)
                        resp.release()
                        missing = self.fitter.missing_model(endpoint, body.get("model"), err.status, err.body)
                        if missing is not None:
                            raise UpstreamError(
                                endpoint, "model not found", status=404, retryable=False, body=missing, own=True
                            )
                        folded = None if retried else self.fitter.learn_refusal(endpoint, body, err.body)
                        if folded is None:
                            raise err
                        body, retried = folded, True  # the template refused a rule now learned: once more, folded
                    lines = ollama_native.sse_lines(_lines(resp)) if sent is not body else _lines(resp)
                    first = await _next_event(lines)
            except FitError as exc:
                attempts.upstream_s += time.perf_counter() - started
                slot.release("abandoned")
                raise ClientRequestError(exc.status, exc.body(), own=True) from None
            except (aiohttp.ClientError, OSError, UpstreamError, TimeoutError, StopAsyncIteration) as exc:
                attempts.upstream_s += time.perf_counter() - started
                if resp is not None:
                    resp.close()
                err = (
                    public_error(endpoint, exc)
                    if not isinstance(exc, StopAsyncIteration)
                    else UpstreamError(endpoint, "stream ended before any event")
                )
                if not err.retryable:
                    raise self._refused(slot, err, exc) from None
                self._record_failure(slot, err, attempts)
                continue
            attempts.upstream_s += time.perf_counter() - started
            attempts.chosen = endpoint
            return endpoint, self._relay(slot, resp, first, lines, attempts, wants_usage)
        raise self._exhausted(attempts)

    async def _relay(
        self,
        slot: Slot,
        resp: aiohttp.ClientResponse,
        first: str,
        lines: AsyncIterator[str],
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
                    yield f"{sse_safe(event)}\n\n".encode()
                if event.strip() == "data: [DONE]":
                    outcome = "ok"
                    return
                try:
                    event = await asyncio.wait_for(_next_event(lines), self.settings.sdc_attempt_timeout_s)
                except StopAsyncIteration:
                    break
            raise UpstreamError(endpoint, "the backend closed the stream before [DONE]")
        except (aiohttp.ClientError, OSError, UpstreamError, TimeoutError) as exc:
            outcome = "failed"
            err = public_error(endpoint, exc)
            message = f"{endpoint.provider} backend {endpoint.name} failed mid-stream: {err}"
            metrics.ATTEMPT_ERRORS.labels(endpoint.provider, "mid_stream").inc()
            yield f"data: {json.dumps({'error': {'message': message, 'type': 'upstream_error'}})}\n\n".encode()
        finally:
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


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    async for raw in resp.content:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


async def _next_event(lines: AsyncIterator[str]) -> str:
    """The next non-empty SSE line (`data: ...`); raises StopAsyncIteration at the end."""
    while True:
        line = await lines.__anext__()
        if line.strip():
            return line
