"""OpenAI's `/v1/completions` and `/v1/embeddings`, on the same gateway, limits and routing as chat.

- `/v1/completions` (a raw prompt, no chat template) goes to a chat model's own `/v1/completions`
  (vLLM's and Ollama's; sdc-runtime serves chat only and answers 404), by the same weights, retries,
  fallbacks and cool-downs as chat; never to Gemini, whose OpenAI endpoint has no text completions.
  The prompt is the caller's own text, template markers included (that is what the route is for), so
  it is not neutralized as chat messages are.
- `/v1/embeddings` goes to an embedding model: a LocalLLM with `spec.routing.role: embedding` (the
  operator publishes its role), or SDC_EMBEDDING_BASE_URL. `model` names one of them (`auto` or none:
  the first); the retriever uses the same models for dense retrieval.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sdc_orchestrator import openai_fields, usage
from sdc_orchestrator.api.deps import ServicesDep
from sdc_orchestrator.backends import Endpoint
from sdc_orchestrator.failures import NoRouteError
from sdc_orchestrator.limits import InputError, InputLimits, _checked_openai, check_int
from sdc_orchestrator.router import UpstreamError
from sdc_orchestrator.scaling.waker import keep_alive
from sdc_orchestrator.services import Services
from sdc_orchestrator.upstream import Attempts

PROVIDERS = ("ollama", "vllm", "transformers", "gemini")
router = APIRouter()
NO_TEXT_COMPLETIONS = frozenset({"gemini"})
COMPLETION_KEYS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "best_of",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "top_k",
        "min_p",
        "repetition_penalty",
    }
)
EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
MAX_PROMPTS = 16
MAX_EMBEDDING_INPUTS = 2048


async def json_body(request: Request) -> dict[str, Any]:
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        raise InputError("the request body is not valid JSON (or nested too deeply)") from None
    if not isinstance(raw, dict):
        raise InputError("the body must be a JSON object")
    return raw


def _texts(value: object, key: str, most: int, limits: InputLimits) -> list[str]:
    """A string or a list of strings (token-id arrays are not served), within the prompt size limit."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"{key}: must be a string or a non-empty list of strings (token ids are not served)")
    if len(texts) > most:
        raise InputError(f"{key}: at most {most} items")
    size = sum(len(t) for t in texts)
    if size > limits.max_prompt_chars:
        raise InputError(f"{key}: {size} characters; the limit is {limits.max_prompt_chars}", 413)
    return texts


def _known(body: dict[str, Any], keys: frozenset[str], texts: str, most: int, limits: InputLimits) -> None:
    """Only `keys`, and the required `texts` field a string or a list of them within the limits."""
    unknown = sorted(set(body) - keys)
    if unknown:
        raise InputError(f"unknown parameter(s): {', '.join(k[:64] for k in unknown[:5])}")
    if texts not in body:
        raise InputError(f"{texts}: required")
    _texts(body[texts], texts, most, limits)


def check_completion(raw: dict[str, Any], limits: InputLimits) -> dict[str, Any]:
    core, extras = openai_fields.accept(raw)
    _known(core, COMPLETION_KEYS, "prompt", MAX_PROMPTS, limits)
    # In completions `logprobs` is a count, not chat's flag; checked here, the rest as chat's fields are.
    check_int(core, "logprobs", 0, 5)
    check_int(core, "best_of", 1, limits.max_n)
    if core.get("echo") is not None and not isinstance(core["echo"], bool):
        raise InputError("echo: must be true or false")
    if core.get("suffix") is not None and (not isinstance(core["suffix"], str) or len(core["suffix"]) > 4096):
        raise InputError("suffix: must be a string of at most 4096 characters")
    _checked_openai({k: v for k, v in core.items() if k != "logprobs"}, limits)
    return {**{k: v for k, v in core.items() if v is not None}, **extras}


def check_embeddings(raw: dict[str, Any], limits: InputLimits) -> dict[str, Any]:
    _known(raw, EMBEDDING_KEYS, "input", MAX_EMBEDDING_INPUTS, limits)
    if raw.get("encoding_format") not in (None, "float", "base64"):
        raise InputError("encoding_format: must be float or base64")
    check_int(raw, "dimensions", 1, 65536)
    for key in ("model", "user"):
        if raw.get(key) is not None and (not isinstance(raw[key], str) or len(raw[key]) > 256):
            raise InputError(f"{key}: must be a string of at most 256 characters")
    return {k: v for k, v in raw.items() if v is not None and k != "user"}


@router.post("/v1/completions")
async def completions(request: Request, services: ServicesDep) -> Response:
    body = check_completion(await json_body(request), services.input_limits)
    provider = "auto"
    if body.get("model") in PROVIDERS:
        provider, body = str(body["model"]), {**body, "model": None}
    if provider in NO_TEXT_COMPLETIONS:
        raise NoRouteError(400, f"provider '{provider}' serves no /v1/completions: use /v1/chat/completions")
    pipeline, upstream = services.pipeline, services.upstream
    body = pipeline.with_defaults(body)
    attempts = Attempts(user=body.get("user") if isinstance(body.get("user"), str) else None)
    started = time.perf_counter()
    try:
        if body.get("stream"):
            opening = upstream.stream(provider, body, attempts, "completions", NO_TEXT_COMPLETIONS)
            if pipeline.would_hold(body):
                # At zero or starting: the stream opens now, with SSE comments while it is held (scaling/).
                events = keep_alive(opening, services.settings.sdc_hold_keepalive_s)
            else:
                _, events = await opening
            return StreamingResponse(_closing(events, attempts), media_type="text/event-stream")
        endpoint, data = await upstream.complete(provider, body, attempts, "completions", NO_TEXT_COMPLETIONS)
    except BaseException:
        attempts.close()
        raise
    attempts.close()
    pipeline.account(endpoint.provider, str(data.get("model") or endpoint.model), data, started)
    return JSONResponse(data)


def embedding_endpoints(services: Services) -> list[Endpoint]:
    settings = services.settings
    found = services.registry.all("embedding")
    if settings.sdc_embedding_base_url:
        base = settings.sdc_embedding_base_url.rstrip("/")
        found.append(Endpoint("env/embedding", "embedding", base, settings.sdc_embedding_model, role="embedding"))
    return found


async def embedding_targets(services: Services, wanted: object) -> list[Endpoint]:
    """The endpoints serving the embedding model asked for (`auto` or none: the first one's model)."""
    targets = embedding_endpoints(services)
    if not targets:
        raise NoRouteError(
            503,
            "no embedding model: apply a LocalLLM with spec.routing.role: embedding "
            "(e.g. manifests/transformers-bge-m3-embedding.yaml) or set SDC_EMBEDDING_BASE_URL",
        )
    if not wanted or wanted == "auto":
        return [e for e in targets if e.provider == targets[0].provider and e.model == targets[0].model]
    names = {e.name: await _served(services, e) for e in targets}
    matching = [e for e in targets if names[e.name] == wanted]
    if not matching:
        known = ", ".join(sorted({n for n in names.values() if n})) or "none answering"
        raise NoRouteError(404, f"embedding model '{str(wanted)[:256]}' is not served; embedding models: {known}")
    return matching


@router.post("/v1/embeddings")
async def embeddings(request: Request, services: ServicesDep) -> Response:
    body = check_embeddings(await json_body(request), services.input_limits)
    targets = await embedding_targets(services, body.get("model"))
    tried: list[dict[str, str]] = []
    for endpoint in sorted(targets, key=services.router.is_cooling):  # warm replicas first
        slot = services.router.acquire(endpoint)
        try:
            status, data = await _embed(services, endpoint, body)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, UpstreamError) as err:
            slot.release("failed")
            tried.append({"endpoint": endpoint.name, "provider": endpoint.provider, "error": type(err).__name__})
            continue
        if status >= 500:
            slot.release("failed")
            tried.append({"endpoint": endpoint.name, "provider": endpoint.provider, "error": f"HTTP {status}"})
            continue
        slot.release("ok" if status < 400 else "abandoned")
        if status < 400:
            usage.count(endpoint.provider, data.get("usage") if isinstance(data, dict) else None)
        return JSONResponse(data, status)
    raise NoRouteError(502, "every embedding backend failed", tried)


async def _embed(services: Services, endpoint: Endpoint, body: dict[str, Any]) -> tuple[int, Any]:
    upstream = services.upstream
    payload = {**body, "model": await upstream.model_of(endpoint)}
    async with upstream.http.post(
        f"{endpoint.base_url}/embeddings",
        json=payload,
        headers=upstream.headers(endpoint),
        timeout=aiohttp.ClientTimeout(total=services.settings.sdc_attempt_timeout_s),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def _served(services: Services, endpoint: Endpoint) -> str:
    try:
        return services.registry.model_id(endpoint, await services.upstream.model_of(endpoint)) or ""
    except UpstreamError:  # a backend that cannot name its model matches nothing
        return ""


async def _closing(events: AsyncIterator[bytes], attempts: Attempts) -> AsyncIterator[bytes]:
    """The stream's events; the attempts' slots are given back however the stream ends."""
    try:
        async for chunk in events:
            yield chunk
    finally:
        attempts.close()
