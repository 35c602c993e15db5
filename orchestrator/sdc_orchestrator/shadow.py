"""Shadow traffic: every chat also goes to a second provider, to compare before moving traffic.

With SDC_SHADOW_PROVIDER set (e.g. `gemini` while local models take traffic,
or `vllm` while Gemini still does), each answered chat is sent again, in the
background, to that provider: same prompt (retrieved context included), same
sampling. The user's answer is already on its way and never changes; the copy
runs on its own budget so it can never hold the request path up:

- at most SDC_SHADOW_CONCURRENCY copies in flight; a chat that finds them all
  busy is not copied (counted as `dropped`), no queue builds up;
- each copy has its own timeout (SDC_SHADOW_TIMEOUT_S) and no retries or
  fallback: a failed copy is counted, not repeated;
- copies do not touch the router's endpoint health, so a failing shadow can
  never cool down (or warm up) what serves users.

Each completed pair records both sides' latency and tokens and a Korean answer
similarity: the overlap (Dice coefficient over multisets) of Kiwi content
morphemes, so 서울은 and 서울의 count as the same word, particles and endings
do not count at all. `GET /api/v1/shadow/report` summarises the recent pairs;
the same figures are Prometheus gauges. Streamed chats are not copied (their
text is never assembled in the orchestrator); they are counted as `skipped`.

Texts are not kept unless asked: SDC_SHADOW_KEEP_TEXTS=N keeps the question and
both answers of the last N pairs (each cut at SDC_SHADOW_TEXT_CHARS) for people
to read side by side in the report's `texts`; memory stays bounded, and nothing
is written to disk.

Each pair belongs to the tenant whose chat it copied (gateway.py): a key sees the
report of its own tenant only; an admin key sees every tenant's, or one with
`?tenant=` (api/migration.py). The gauges cover every tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter as Tally
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.fitting import FitError
from sdc_orchestrator.gateway import DEFAULT_TENANT
from sdc_orchestrator.rag.korean import morphemes
from sdc_orchestrator.router import UpstreamError

SHADOW_CALLS = Counter("sdc_orchestrator_shadow_calls_total", "Shadow copies by outcome", ["outcome"])
SHADOW_SIMILARITY = Gauge(
    "sdc_orchestrator_shadow_similarity", "Mean Korean morpheme overlap of recent answer pairs (0..1)"
)
SHADOW_PAIRS = Gauge("sdc_orchestrator_shadow_pairs", "Answer pairs in the shadow report window")
SHADOW_LATENCY = Gauge("sdc_orchestrator_shadow_latency_seconds", "Mean latency of recent pairs", ["side"])
SHADOW_TOKENS = Gauge("sdc_orchestrator_shadow_completion_tokens", "Mean completion tokens of recent pairs", ["side"])


def similarity(a: str, b: str) -> float:
    """Dice coefficient of the two answers' Kiwi content-morpheme multisets (1.0: same words)."""
    left, right = Tally(morphemes(a)), Tally(morphemes(b))
    total = sum(left.values()) + sum(right.values())
    if total == 0:
        return 1.0 if a.strip() == b.strip() else 0.0
    return 2 * sum((left & right).values()) / total


@dataclass(frozen=True)
class Side:
    provider: str
    model: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Pair:
    primary: Side
    shadow: Side
    similarity: float
    at: float
    tenant: str = DEFAULT_TENANT


def side(provider: str, model: str, latency_s: float, data: dict[str, Any]) -> Side:
    usage = data.get("usage") or {}
    return Side(
        provider,
        model,
        latency_s,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


def _answer(data: dict[str, Any]) -> str:
    return str(data["choices"][0]["message"].get("content") or "")


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(ordered[len(ordered) // 2], 4),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 4),
    }


def _per_side(sides: list[Side]) -> dict[str, Any]:
    return {
        "providers": dict(Tally(f"{s.provider}:{s.model}" for s in sides)),
        "latency_s": _summary([s.latency_s for s in sides]),
        "prompt_tokens": _summary([float(s.prompt_tokens) for s in sides]),
        "completion_tokens": _summary([float(s.completion_tokens) for s in sides]),
    }


def _recent(pair: Pair) -> dict[str, Any]:
    return {
        "primary": f"{pair.primary.provider}:{pair.primary.model}",
        "shadow": f"{pair.shadow.provider}:{pair.shadow.model}",
        "similarity": pair.similarity,
        "primary_latency_s": round(pair.primary.latency_s, 4),
        "shadow_latency_s": round(pair.shadow.latency_s, 4),
    }


class Shadow:
    def __init__(
        self,
        provider: str | None,
        registry: EndpointRegistry,
        http: Any,
        model_of: Any,
        *,
        concurrency: int,
        timeout_s: float,
        max_pairs: int,
        send: Any = None,
        keep_texts: int = 0,
        text_chars: int = 2000,
    ) -> None:
        self.provider = provider
        # (endpoint, body) -> the answer, fitted to the shadow's model as user chats are (Upstream.fitted_chat):
        # the runbook's phase 0 shadows Gemini's chats to Gemma 2, whose template refuses their system turn.
        self._send = send
        self.registry = registry
        self._http = http  # () -> aiohttp.ClientSession: the shared session of Upstream
        self._model_of = model_of
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.pairs: deque[Pair] = deque(maxlen=max_pairs)
        self.text_chars = text_chars
        self.texts: deque[dict[str, Any]] = deque(maxlen=keep_texts)  # maxlen 0: nothing is kept
        self.outcomes: Tally[str] = Tally()
        self.tenant_outcomes: dict[str, Tally[str]] = {}
        self._tasks: dict[asyncio.Task[None], str] = {}  # each copy in flight and its tenant

    @property
    def enabled(self) -> bool:
        return bool(self.provider)

    def _count(self, outcome: str, tenant: str) -> None:
        self.outcomes[outcome] += 1
        self.tenant_outcomes.setdefault(tenant, Tally())[outcome] += 1
        SHADOW_CALLS.labels(outcome).inc()

    def skip(self, tenant: str = DEFAULT_TENANT) -> None:
        if self.enabled:
            self._count("skipped", tenant)

    def submit(self, payload: dict[str, Any], primary: Side, answer: str, tenant: str = DEFAULT_TENANT) -> None:
        """Copy an answered chat to the shadow provider, if the budget allows; never blocks."""
        if not self.provider:
            return
        if primary.provider == self.provider:
            self._count("same_provider", tenant)  # e.g. the primary fell back to the shadow provider
            return
        if len(self._tasks) >= self.concurrency:
            self._count("dropped", tenant)
            return
        task = asyncio.get_running_loop().create_task(self._run(dict(payload), primary, answer, tenant))
        self._tasks[task] = tenant
        task.add_done_callback(lambda done: self._tasks.pop(done, None))

    async def _run(self, payload: dict[str, Any], primary: Side, answer: str, tenant: str) -> None:
        endpoints = [e for e in self.registry.for_provider(self.provider or "") if e.weight > 0] or (
            self.registry.for_provider(self.provider or "")
        )
        if not endpoints:
            self._count("no_endpoint", tenant)
            return
        endpoint: Endpoint = endpoints[self.outcomes.total() % len(endpoints)]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                body = {**payload, "model": await self._model_of(endpoint), "stream": False}
                if self._send is not None:
                    data: dict[str, Any] = await self._send(endpoint, body)
                else:
                    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
                    async with self._http().post(
                        f"{endpoint.base_url}/chat/completions", json=body, headers=headers
                    ) as r:
                        if r.status >= 400:
                            self._count(f"http_{r.status}", tenant)
                            return
                        data = await r.json(content_type=None)
            latency = time.perf_counter() - started
            text = _answer(data)
        except FitError:
            self._count("does_not_fit", tenant)
            return
        except TimeoutError:
            self._count("timeout", tenant)
            return
        except UpstreamError as err:
            self._count(f"http_{err.status}" if err.status else "error", tenant)
            return
        except (aiohttp.ClientError, OSError, ValueError, KeyError, IndexError, TypeError):
            self._count("error", tenant)
            return
        score = await asyncio.to_thread(similarity, answer, text)
        shadow_side = side(endpoint.provider, str(data.get("model") or body["model"]), latency, data)
        self.pairs.append(Pair(primary, shadow_side, round(score, 4), time.time(), tenant))
        if self.texts.maxlen:
            self._keep_texts(payload, primary, shadow_side, answer, text, round(score, 4), tenant)
        self._count("compared", tenant)
        self._publish()

    def _keep_texts(
        self, payload: dict[str, Any], primary: Side, shadow: Side, a: str, b: str, score: float, tenant: str
    ) -> None:
        users = [m for m in payload.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        question = str(users[-1].get("content") or "") if users else ""
        cut = self.text_chars
        self.texts.append(
            {
                "at": round(time.time(), 3),
                "question": question[-cut:],  # the end: a RAG prompt puts the question after the passages
                "primary": f"{primary.provider}:{primary.model}",
                "shadow": f"{shadow.provider}:{shadow.model}",
                "primary_text": a[:cut],
                "shadow_text": b[:cut],
                "similarity": score,
                "tenant": tenant,
            }
        )

    def _publish(self) -> None:
        report = self.report()
        SHADOW_PAIRS.set(report["pairs"])
        SHADOW_SIMILARITY.set(report["similarity"]["mean"] or 0.0)
        for name in ("primary", "shadow"):
            SHADOW_LATENCY.labels(name).set(report[name]["latency_s"]["mean"] or 0.0)
            SHADOW_TOKENS.labels(name).set(report[name]["completion_tokens"]["mean"] or 0.0)

    def report(self, tenant: str | None = None) -> dict[str, Any]:
        """The recent pairs of one tenant, or of every tenant (`None`: an admin's view, and the gauges')."""
        pairs = [p for p in self.pairs if tenant is None or p.tenant == tenant]
        texts = [t for t in self.texts if tenant is None or t["tenant"] == tenant]
        outcomes = self.outcomes if tenant is None else self.tenant_outcomes.get(tenant, Tally())
        in_flight = sum(1 for owner in self._tasks.values() if tenant is None or owner == tenant)

        return {
            "shadow_provider": self.provider,
            "enabled": self.enabled,
            "tenant": tenant,
            "tenants": sorted(self.tenant_outcomes) if tenant is None else [tenant],
            "pairs": len(pairs),
            "outcomes": dict(outcomes),
            "in_flight": in_flight,
            "texts": texts,
            "similarity": _summary([p.similarity for p in pairs]),
            "primary": _per_side([p.primary for p in pairs]),
            "shadow": _per_side([p.shadow for p in pairs]),
            "recent": [_recent(p) for p in pairs[-20:]],
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
