"""Engine-aware routing against simulated engines: round-robin, least-load and ours, side by side.

Each replica is a real HTTP server on loopback (aiohttp) that speaks the
OpenAI chat API (streamed: the first event after prefill, the rest after
decode) and serves /metrics in vLLM's names. Inside, a vLLM-like engine in
miniature: at most MAX_RUNNING requests at once, a waiting queue (refused with
503 past MAX_WAITING, as an overloaded server does), a prefix cache of chained
16-character blocks with LRU eviction, prefill time per uncached character and
decode time per token. Prefill saved by a cache hit is time to first token
saved, which is what prefix-aware routing buys.

The caches are sized as in the issue's measurement: each replica holds a third
of the distinct prompts, so round-robin's hit rate is near 0.3. Three
workloads, each at 8 and 32 replicas, Poisson arrivals at a fixed rate (open
loop: a slow policy queues, it does not slow the clients down):

- rag: 2 documents per replica, each the system message (about 1,900 Korean
  characters), a question from the evaluation set as the user message.
- zipf: the same with documents drawn Zipf(1.2)-skewed: the hottest document
  is about a quarter to a third of all traffic, more than one replica can serve. A policy
  with affinity and no load bound herds it onto one pod (the row
  `affinity-only` shows what that costs), ours spills it within the bound.
- multi-turn: conversations about a document, each turn the whole history
  plus a new question, replayed turn after turn with think time.
- slow-replica: rag with one replica four times slower than the rest (the
  issue's measurement: round-robin still gave such a replica 21 %).

The policies route in this process, exactly as the orchestrator's router
does (`Router.pick` over the published document's entries, with the scraper
reading every replica's /metrics once a second); the baselines are
round-robin (what a Service does) and least-load (fewest requests in flight,
random ties). Reported: engine-reported prefix-cache hit rate (the engines'
own vllm:prefix_cache_hits / queries counters, in characters), TTFT p50/p90
as the client saw it, the largest share of requests one replica got, and
failed requests (a 503 or no answer within CLIENT_TIMEOUT_S).

Run: `python benchmarks/engine_sim.py [--replicas 8 32] [--seconds 8]` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "orchestrator"))
from sdc_orchestrator.backends import Endpoint, published_endpoints
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing.policy import ReplicaPolicy, hint
from sdc_orchestrator.routing.scrape import Scraper, parse

from benchmarks.common import machine, percentile, table, write_report

DATA = Path(__file__).resolve().parent / "data"
ENGINE_BLOCK = 16  # characters per engine cache block (vLLM: 16 tokens)
MAX_RUNNING = 2
MAX_WAITING = 24
PREFILL_S_PER_CHAR = 0.0004  # a 1,900-character prompt uncached: 0.76 s of prefill
DECODE_S_PER_TOKEN = 0.006
OUT_TOKENS = 16
CLIENT_TIMEOUT_S = 15.0
ANSWER = "네, 문서에 따르면 그렇습니다."


# -- the engine ------------------------------------------------------------------------------------------


def prompt_text(messages: list[dict[str, str]]) -> str:
    """The engine's own rendering (a chat template): role markers and contents, in order."""
    return "".join(f"<{m.get('role')}>{m.get('content')}" for m in messages)


def completion(model: str, prompt_chars: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": OUT_TOKENS, "total_tokens": prompt_chars + 16},
    }


@dataclass
class Engine:
    cache_blocks: int
    slowdown: float = 1.0
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)
    running: int = 0
    waiting: int = 0
    running_chars: int = 0
    queries: int = 0
    hits: int = 0
    served: int = 0
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_RUNNING))

    def reset(self) -> None:
        self.cache.clear()
        self.queries = self.hits = self.served = 0

    def lookup_and_fill(self, text: str) -> int:
        """Characters of `text` found cached (the longest cached prefix of whole blocks); caches all its blocks."""
        key, hit, prefix = 0, 0, True
        for start in range(0, len(text) // ENGINE_BLOCK * ENGINE_BLOCK, ENGINE_BLOCK):
            key = hash((key, text[start : start + ENGINE_BLOCK]))
            if prefix and key in self.cache:
                hit += ENGINE_BLOCK
            else:
                prefix = False
            self.cache[key] = None
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_blocks:
            self.cache.popitem(last=False)
        return hit

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = prompt_text(body["messages"])
        if self.waiting >= MAX_WAITING:
            return web.json_response({"error": {"message": "queue full"}}, status=503)
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.running_chars += len(text)
        try:
            hit = self.lookup_and_fill(text)
            self.queries += len(text)
            self.hits += hit
            await asyncio.sleep((len(text) - hit) * PREFILL_S_PER_CHAR * self.slowdown)
            if not body.get("stream"):
                await asyncio.sleep(OUT_TOKENS * DECODE_S_PER_TOKEN * self.slowdown)
                self.served += 1
                return web.json_response(completion(str(body.get("model") or "sim"), len(text)))
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"choices": [{"index": 0, "delta": {"content": ANSWER[:4]}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(OUT_TOKENS * DECODE_S_PER_TOKEN * self.slowdown)
            chunk = {"choices": [{"index": 0, "delta": {"content": ANSWER[4:]}, "finish_reason": "stop"}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            self.served += 1
            return resp
        finally:
            self.running -= 1
            self.running_chars -= len(text)
            self.slots.release()

    async def metrics(self, _: web.Request) -> web.Response:
        kv = min(1.0, self.running_chars / ENGINE_BLOCK / self.cache_blocks)
        lines = [
            "# HELP vllm:num_requests_running Requests in the batch.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="sim"}} {self.running}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="sim"}} {self.waiting}',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="sim"}} {kv}',
            "# TYPE vllm:prefix_cache_queries counter",
            f'vllm:prefix_cache_queries_total{{model_name="sim"}} {self.queries}',
            "# TYPE vllm:prefix_cache_hits counter",
            f'vllm:prefix_cache_hits_total{{model_name="sim"}} {self.hits}',
            # What a real page has around them (histograms): the scraper must skip it cheaply.
            "# TYPE vllm:time_to_first_token_seconds histogram",
            *(f'vllm:time_to_first_token_seconds_bucket{{le="{b}",model_name="sim"}} 0' for b in (0.1, 1, 10)),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@dataclass
class Fleet:
    engines: list[Engine]
    urls: list[str]
    runners: list[web.AppRunner]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def start_fleet(n: int, cache_blocks: int, slow: Sequence[float] = ()) -> Fleet:
    engines, urls, runners = [], [], []
    for i in range(n):
        engine = Engine(cache_blocks, slow[i] if i < len(slow) else 1.0)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", engine.chat)
        app.router.add_get("/metrics", engine.metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        engines.append(engine)
        urls.append(f"http://127.0.0.1:{port}")
        runners.append(runner)
    return Fleet(engines, urls, runners)


@contextmanager
def fleet_in_thread(n: int, cache_blocks: int = 4096) -> Iterator[Fleet]:
    """A fleet served by its own event loop in a daemon thread (for tests that drive it from outside)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fleet = asyncio.run_coroutine_threadsafe(start_fleet(n, cache_blocks), loop).result(timeout=30)
    try:
        yield fleet
    finally:
        asyncio.run_coroutine_threadsafe(fleet.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


# -- workloads ---------------------------------------------------------------------------------------------


def passages() -> list[str]:
    rows = [line.split("\t") for line in (DATA / "ko_passages.tsv").read_text().splitlines()[1:] if "\t" in line]
    return [text for _, text in rows]


def questions() -> list[str]:
    rows = [line.split("\t") for line in (DATA / "ko_questions.tsv").read_text().splitlines()[1:] if "\t" in line]
    return [row[2] for row in rows if len(row) >= 3]


SYSTEM = "당신은 SDC 문서 도우미입니다. 아래 문서만 근거로 한국어로 답하세요.\n\n"


def documents(count: int, rng: random.Random) -> list[str]:
    pool = passages()
    docs = []
    for i in range(count):
        chosen = rng.sample(pool, 12)
        docs.append(f"{SYSTEM}[문서 {i}]\n" + "\n".join(chosen))
    return docs


@dataclass
class Request:
    at: float  # seconds after the start
    messages: list[dict[str, str]]


def single_turn(docs: list[str], rate: float, seconds: float, rng: random.Random, zipf: float = 0.0) -> list[Request]:
    qs = questions()
    weights = [1 / (i + 1) ** zipf for i in range(len(docs))] if zipf else None
    out: list[Request] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        doc = rng.choices(docs, weights=weights, k=1)[0]
        out.append(Request(t, [{"role": "system", "content": doc}, {"role": "user", "content": rng.choice(qs)}]))


# -- the policies -------------------------------------------------------------------------------------------

Route = Callable[[list[dict[str, str]]], tuple[int, Callable[[bool], None]]]


def round_robin(n: int) -> Route:
    order = cycle(range(n))
    return lambda _messages: (next(order), lambda _ok: None)


def least_load(n: int, rng: random.Random) -> Route:
    in_flight = [0] * n

    def route(_messages: list[dict[str, str]]) -> tuple[int, Callable[[bool], None]]:
        i = min(range(n), key=lambda j: (in_flight[j], rng.random()))
        in_flight[i] += 1

        def done(_ok: bool) -> None:
            in_flight[i] -= 1

        return i, done

    return route


def router_route(router: Router, endpoints: list[Endpoint], index_of: dict[str, int]) -> Route:
    def route(messages: list[dict[str, str]]) -> tuple[int, Callable[[bool], None]]:
        endpoint = router.pick(endpoints, set(), None, hint(messages))
        assert endpoint is not None  # noqa: S101 - every replica is warm in the simulation
        slot = router.acquire(endpoint)

        def done(ok: bool) -> None:
            slot.release("ok" if ok else "abandoned")

        return index_of[endpoint.name], done

    return route


def published(fleet: Fleet, tmp: Path) -> list[Endpoint]:
    """The replicas as the operator would publish them (one entry per pod), read back as the orchestrator does."""
    entries = [
        {
            "name": "bench/sim",
            "namespace": "bench",
            "localLLM": "sim",
            "replica": f"sim-{i}",
            "runtime": "vllm",
            "model": "sim",
            "baseUrl": f"{url}/v1",
            "metricsUrl": f"{url}/metrics",
            "weight": 100,
            "role": "chat",
            "pool": None,
        }
        for i, url in enumerate(fleet.urls)
    ]
    path = tmp / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    return published_endpoints(path)


# -- one run -------------------------------------------------------------------------------------------------


WARM_UP_S = 2.0  # TTFT is the steady state's: requests sent in the first seconds (the caches' cold start) are left out


@dataclass
class Result:
    started: float = field(default_factory=time.perf_counter)
    ttft: list[float] = field(default_factory=list)
    ttft_followup: list[float] = field(default_factory=list)  # multi-turn: turns after the first
    failed: int = 0
    # Per request, the prefill no router can save (what the ceiling's engine missed, at the prefill rate): a
    # floor under TTFT that holds for any policy, before any queueing.
    floor: list[float] = field(default_factory=list)
    per_replica: Counter[int] = field(default_factory=Counter)
    # The ceiling: one engine with an unbounded cache that saw every request (no router can beat it).
    oracle: Engine = field(default_factory=lambda: Engine(cache_blocks=1 << 40))

    def ceiling(self) -> float:
        return self.oracle.hits / self.oracle.queries if self.oracle.queries else 0.0


async def call(
    http: aiohttp.ClientSession,
    url: str,
    messages: list[dict[str, str]],
    result: Result,
    replica: int,
    followup: bool = False,
) -> str | None:
    """One streamed chat; its TTFT into `result`; the answer's text, or None when it failed."""
    started = time.perf_counter()
    result.per_replica[replica] += 1
    text_in = prompt_text(messages)
    result.oracle.queries += len(text_in)
    oracle_hit = result.oracle.lookup_and_fill(text_in)
    result.oracle.hits += oracle_hit
    if started - result.started >= WARM_UP_S:
        result.floor.append((len(text_in) - oracle_hit) * PREFILL_S_PER_CHAR)
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            async with http.post(f"{url}/v1/chat/completions", json={"messages": messages, "stream": True}) as resp:
                if resp.status != 200:
                    result.failed += 1
                    return None
                text, first = [], True
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    if first and started - result.started >= WARM_UP_S:
                        result.ttft.append(time.perf_counter() - started)
                        if followup:
                            result.ttft_followup.append(result.ttft[-1])
                    first = False
                    text.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))
                return "".join(text)
    except (aiohttp.ClientError, TimeoutError):
        result.failed += 1
        return None


async def replay_single(http: aiohttp.ClientSession, fleet: Fleet, route: Route, requests: list[Request]) -> Result:
    result = Result()
    start = result.started

    async def one(req: Request) -> None:
        await asyncio.sleep(max(0.0, start + req.at - time.perf_counter()))
        replica, done = route(req.messages)
        answer = await call(http, fleet.urls[replica], req.messages, result, replica)
        done(answer is not None)

    await asyncio.gather(*(one(r) for r in requests))
    return result


async def replay_conversations(
    http: aiohttp.ClientSession,
    fleet: Fleet,
    route: Route,
    docs: list[str],
    seconds: float,
    turns: int,
    think_s: float,
    rng: random.Random,
) -> Result:
    result = Result()
    qs = questions()
    starts = sorted(rng.uniform(0, seconds) for _ in docs)
    plans = [
        (at, doc, [rng.choice(qs) for _ in range(turns)], rng.random()) for at, doc in zip(starts, docs, strict=True)
    ]

    async def conversation(at: float, doc: str, asked: list[str], seed: float) -> None:
        local = random.Random(seed)
        await asyncio.sleep(at)
        history = [{"role": "system", "content": doc}]
        for turn, question in enumerate(asked):
            history = [*history, {"role": "user", "content": question}]
            replica, done = route(history)
            answer = await call(http, fleet.urls[replica], history, result, replica, followup=turn > 0)
            done(answer is not None)
            history = [*history, {"role": "assistant", "content": answer or ""}]
            await asyncio.sleep(local.expovariate(1 / think_s))

    await asyncio.gather(*(conversation(*plan) for plan in plans))
    return result


@dataclass
class Row:
    workload: str
    replicas: int
    policy: str
    requests: int
    hit_rate: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    top_share: float
    failed: int
    ceiling: float = 0.0
    followup_p90_ms: float | None = None
    floor_p90_ms: float = 0.0
    slow_share: float | None = None  # slow-replica: the share of replica 0, four times slower than the rest


async def engine_hit_rate(http: aiohttp.ClientSession, fleet: Fleet) -> float:
    """The engines' own counters, read from their /metrics pages as any scraper would."""
    queries = hits = 0.0
    for url in fleet.urls:
        async with http.get(f"{url}/metrics") as resp:
            reading = parse(await resp.text(), 0.0)
        queries += reading.prefix_queries
        hits += reading.prefix_hits
    return hits / queries if queries else 0.0


async def run_policy(
    http: aiohttp.ClientSession,
    fleet: Fleet,
    endpoints: list[Endpoint],
    policy: str,
    replay: Callable[[Route], Awaitable[Result]],
    seed: int,
) -> tuple[Result, float]:
    for engine in fleet.engines:
        engine.reset()
    rng = random.Random(seed)
    scraping: asyncio.Task[None] | None = None
    router: Router | None = None
    n = len(fleet.urls)
    if policy == "round-robin":
        route = round_robin(n)
    elif policy == "least-load":
        route = least_load(n, rng)
    else:
        replicas = ReplicaPolicy(scraper=Scraper(interval_s=1.0), rng=rng)
        if policy == "affinity-only":  # no load bound: what herding costs
            replicas.epsilon, replicas.slack = 1e9, 1e9
        router = Router(rng=rng, replicas=replicas)
        route = router_route(router, endpoints, {e.name: i for i, e in enumerate(endpoints)})
        targets = [(e.name, e.metrics_url or "") for e in endpoints]
        scraping = asyncio.get_running_loop().create_task(replicas.scraper.run(lambda: targets))
    try:
        result = await replay(route)
    finally:
        if scraping is not None and router is not None:
            scraping.cancel()
            await router.replicas.scraper.close()
    hit_rate = await engine_hit_rate(http, fleet)
    # Requests whose clients gave up are still queued in their engines: let them drain, or the next
    # policy's run would start behind this one's backlog.
    for _ in range(int(2 * CLIENT_TIMEOUT_S / 0.05)):
        if not any(e.running or e.waiting for e in fleet.engines):
            break
        await asyncio.sleep(0.05)
    return result, hit_rate


async def run_workload(
    http: aiohttp.ClientSession, workload: str, n: int, seconds: float, policies: Sequence[str], seed: int
) -> list[Row]:
    rng = random.Random(seed)
    docs = documents(2 * n, rng)
    # Each cache holds a third of the distinct prompts' blocks (the issue's measurement).
    distinct_blocks = sum(len(prompt_text([{"role": "system", "content": d}])) for d in docs) // ENGINE_BLOCK
    multi = workload == "multi-turn"
    if multi:
        docs = documents(4 * n, rng)
        distinct_blocks = sum(len(d) + 6 * 120 for d in docs) // ENGINE_BLOCK
    fleet = await start_fleet(n, max(1, distinct_blocks // 3), slow=(4.0,) if workload == "slow-replica" else ())
    # Round-robin's service time at its ~1/3 hit rate sets the rate: busy but stable for it (about 85 %).
    service_s = 2 / 3 * len(docs[0]) * PREFILL_S_PER_CHAR + OUT_TOKENS * DECODE_S_PER_TOKEN
    rate = 0.85 * n * MAX_RUNNING / service_s
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        endpoints = published(fleet, Path(tmp))
        try:
            for policy in policies:
                load_rng = random.Random(seed + 1)  # the same arrivals for every policy
                requests = single_turn(docs, rate, seconds, load_rng, zipf=1.2 if workload == "zipf" else 0.0)

                def replay(
                    route: Route, reqs: list[Request] = requests, r: random.Random = load_rng
                ) -> Awaitable[Result]:
                    if multi:
                        return replay_conversations(http, fleet, route, docs, seconds, 6, 0.3, r)
                    return replay_single(http, fleet, route, reqs)

                result, hit_rate = await run_policy(http, fleet, endpoints, policy, replay, seed)
                total = sum(result.per_replica.values())
                rows.append(
                    Row(
                        workload,
                        n,
                        policy,
                        total,
                        hit_rate,
                        percentile(result.ttft, 50) * 1000,
                        percentile(result.ttft, 90) * 1000,
                        max(result.per_replica.values()) / total if total else 0.0,
                        result.failed,
                        result.ceiling(),
                        percentile(result.ttft_followup, 90) * 1000 if multi else None,
                        percentile(result.floor, 90) * 1000,
                        result.per_replica[0] / total if workload == "slow-replica" and total else None,
                    )
                )
                print(rows[-1], flush=True)
        finally:
            await fleet.close()
    return rows


WORKLOADS = {
    "rag": ("round-robin", "least-load", "ours"),
    "zipf": ("round-robin", "least-load", "affinity-only", "ours"),
    "multi-turn": ("round-robin", "least-load", "ours"),
    "slow-replica": ("round-robin", "least-load", "ours"),
}


async def main_async(sizes: Sequence[int], seconds: float, workloads: Sequence[str], seed: int) -> list[Row]:
    rows: list[Row] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        for n in sizes:
            for workload in workloads:
                rows += await run_workload(http, workload, n, seconds, WORKLOADS[workload], seed)
    return rows


def report(rows: list[Row], seconds: float) -> str:
    headers = ["workload", "replicas", "policy", "requests", "hit rate", "ceiling", "TTFT p50 ms", "TTFT p90 ms"]
    headers += ["p90 floor ms", "top share"]
    body = [
        [
            r.workload,
            r.replicas,
            r.policy,
            r.requests,
            round(r.hit_rate, 3),
            round(r.ceiling, 3),
            r.ttft_p50_ms,
            r.ttft_p90_ms,
            round(r.floor_p90_ms, 1),
            round(r.top_share, 3),
            r.failed,
        ]
        for r in rows
    ]
    ratios = []
    for r in rows:
        if r.policy != "ours":
            continue
        rr = next(x for x in rows if (x.workload, x.replicas, x.policy) == (r.workload, r.replicas, "round-robin"))
        line = (
            f"- {r.workload}, {r.replicas} replicas: hit rate {r.hit_rate:.2f} vs round-robin {rr.hit_rate:.2f} "
            f"(ceiling {r.ceiling:.2f}); TTFT p90 {r.ttft_p90_ms / rr.ttft_p90_ms:.2f}x round-robin's "
            f"(no router below {r.floor_p90_ms / rr.ttft_p90_ms:.2f}x); {r.failed} failed"
        )
        if r.slow_share is not None and rr.slow_share is not None:
            ll = next(x for x in rows if (x.workload, x.replicas, x.policy) == (r.workload, r.replicas, "least-load"))
            line += (
                f"; the 4x slower replica got {r.slow_share:.1%} of the requests (round-robin {rr.slow_share:.1%}, "
                f"least-load {ll.slow_share or 0:.1%}; a fair share is {1 / r.replicas:.1%})"
            )
        if r.followup_p90_ms is not None and rr.followup_p90_ms:
            line += (
                f"; follow-up turns' TTFT p90 {r.followup_p90_ms:.0f} ms vs {rr.followup_p90_ms:.0f} ms "
                f"({r.followup_p90_ms / rr.followup_p90_ms:.2f}x)"
            )
        ratios.append(line)
    return "\n".join(
        [
            "## Engine-aware routing (simulated engines)",
            "",
            f"`python benchmarks/engine_sim.py` ({seconds:.0f} s of arrivals per run; {machine()}). Each replica a "
            "real HTTP server on loopback with vLLM's metric names, a prefix cache holding a third of the distinct "
            f"prompts, {MAX_RUNNING} requests running and at most {MAX_WAITING} waiting (503 past that). Hit rate: "
            "the engines' own counters over the whole run; ceiling: what one engine with an unbounded cache would "
            "hit on the same requests (each document's first request and each question are misses for anyone); "
            "p90 floor: the 90th percentile of the prefill that engine could not save, a TTFT no router can beat "
            "even with no queueing (a multi-turn conversation's first turn is a cold document for any router, "
            "and first turns are one request in six). "
            f"TTFT: the client's, for requests sent after a {WARM_UP_S:.0f} s warm-up (the same arrivals for every "
            "policy). Routing as in the orchestrator (`Router.pick`, one scrape a second). The multi-turn "
            "follow-up turns are also given apart.",
            "",
            table([*headers, "failed"], body),
            "",
            *ratios,
            "",
            "Beside the published figures of the systems users compare us with (their hardware and workloads, "
            "not ours; the ratios are what compares): llm-d's prefix-aware scheduler took TTFT p90 from 58 s to "
            "0.16 s against a plain Service on 16 H100s; KubeAI's consistent hashing with bounded loads cut TTFT "
            "by 95 % on 8 L4s; AIBrix's prefix-aware routing cut it by 45 % against random. Here, the rows above "
            "give ours against round-robin (a Service) on simulated engines; `affinity-only` is what affinity "
            "without the load bound does to a skewed workload (llm-d measured 55 % of requests succeeding that "
            "way). Two real vLLM replicas under the same workloads are not part of this run yet.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows = asyncio.run(main_async(args.replicas, args.seconds, args.workloads, args.seed))
    text = report(rows, args.seconds)
    print(text)
    write_report("routing", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
