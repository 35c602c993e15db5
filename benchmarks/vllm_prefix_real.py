"""Two real vLLM CPU replicas under a shared-prefix Korean RAG workload: the Service, least-load and ours (#23, 5a).

    python hack/cluster.py up && python hack/images.py   # the real node, the vLLM CPU image on it
    python benchmarks/vllm_prefix_real.py [--docs 24] [--questions 6] [--clients 4] [--kv-blocks 96]

The issue's workload on real engines: 24 Korean documents (passages of benchmarks/data, the document as
the system message) x 6 questions each, sent by 4 clients (closed loop: each sends its next request when
its answer is done), in one shuffled order that every policy replays. Two replicas of one vLLM LocalLLM
(`vllm serve` of the CPU image, a random Llama of 4 layers x 512 from the in-cluster hub) on the real
node; the requests go from this machine to the pods:

- service: the LocalLLM's Service (kube-proxy picks the pod: what the orchestrator did before #23)
- least-load: the pod with the fewest requests in flight from here (random ties)
- ours: the orchestrator's Router (`Router.pick` with its ReplicaPolicy, the scraper reading both pods'
  /metrics every second), in this process, over the entries the operator publishes for the two pods

Reported per policy: the engines' own prefix-cache hit rate (deltas of vllm:prefix_cache_hits_total /
vllm:prefix_cache_queries_total summed over both pods, in tokens), TTFT p50/p90 as the client saw it
(streamed), the largest share one pod got, failures, and the load average. Each policy gets documents of
its own (the same passages, a different document number in the first block), so no policy is served
from the cache an earlier one filled. Without --kv-blocks the engines' caches are vLLM's CPU default
(1 GiB of KV each): they hold every document, so round-robin's misses are only each document's first visit
to each pod. `--kv-blocks 96` (what `make bench` runs) holds each cache to 96 blocks of 128 tokens, about a
third of the documents' tokens: the issue's setting (engine_sim.py's simulated caches likewise).

With --kv-blocks, each row also gives the ceiling on its own trace (benchmarks/cache_ceiling.py: the best
hit rate any router could reach, Belady over both caches; tokens by the pods' own tokenizer) and the TTFT
p90 floor: the prefill that even the ceiling must do at the 90th percentile (every document's first
request is cold for any router), timed by a line fitted to requests sent one at a time to an idle pod
(a cold document, then the same document with another question) before the policies run.

Skips (exit 0 with a message) without the cluster's real node. Writes benchmarks/out/vllm_prefix_real.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sdc_orchestrator.backends import Endpoint, published_endpoints
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing.policy import ReplicaPolicy, hint
from sdc_orchestrator.routing.scrape import Scraper

from benchmarks import cache_ceiling
from benchmarks.common import machine, percentile, table, write_report
from benchmarks.engine_sim import SYSTEM, passages, questions
from benchmarks.real_node import Release, cluster_kubeconfig, load_average, localllm, new_release, pod_ready
from benchmarks.scale_from_zero import prepare_hub
from benchmarks.vllm_prefix_ceiling import tokenizer_encode
from hack import hub
from tests.conftest import Kubectl, wait_until

LLM = "rag"
# A model big enough that prefill costs what a cache hit saves (the hub's vLLM test model, 2 layers of 256,
# prefilled 1,500 tokens in a few ms: TTFT was all noise). Random weights; only the shape matters here.
RAG_MODEL = "sdc/rag-vllm"
RAG_SHAPE = {"hidden_size": 512, "heads": 16, "kv_heads": 4, "layers": 4}
PORT = 8000
MAX_TOKENS = 8
PASSAGES_PER_DOC = 8
POLICIES = ("service", "least-load", "ours")
BLOCK = 128  # tokens per KV block with --kv-blocks (--block-size=128)
SOLO_ROUNDS = 3
Encode = Callable[[list[dict[str, str]]], list[int]]


@dataclass
class Outcome:
    ttft: list[float] = field(default_factory=list)
    failed: int = 0
    per_pod: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def documents(policy: str, count: int, rng: random.Random) -> list[str]:
    pool = passages()
    return [f"{SYSTEM}[{policy} 문서 {i}]\n" + "\n".join(rng.sample(pool, PASSAGES_PER_DOC)) for i in range(count)]


def workload(policy: str, docs: int, per_doc: int, seed: int) -> list[list[dict[str, str]]]:
    """The same shuffled order of (document, question) for every policy; the documents are the policy's own."""
    rng = random.Random(seed)
    texts = documents(policy, docs, random.Random(seed))
    qs = questions()
    pairs = [(d, rng.choice(qs)) for d in range(docs) for _ in range(per_doc)]
    rng.shuffle(pairs)
    return [[{"role": "system", "content": texts[d]}, {"role": "user", "content": q}] for d, q in pairs]


def counters(text: str) -> tuple[float, float]:
    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    return total("vllm:prefix_cache_hits_total"), total("vllm:prefix_cache_queries_total")


async def engine_counters(client: httpx.AsyncClient, pods: dict[str, str]) -> tuple[float, float]:
    hits = queries = 0.0
    for ip in pods.values():
        h, q = counters((await client.get(f"http://{ip}:{PORT}/metrics")).text)
        hits, queries = hits + h, queries + q
    return hits, queries


def published(pods: dict[str, str], namespace: str, model: str, tmp: Path) -> list[Endpoint]:
    """The two pods as the operator publishes them (one entry per pod), read back as the orchestrator does."""
    entries = [
        {
            "name": f"{namespace}/{LLM}",
            "namespace": namespace,
            "localLLM": LLM,
            "replica": name,
            "runtime": "vllm",
            "model": model,
            "baseUrl": f"http://{ip}:{PORT}/v1",
            "metricsUrl": f"http://{ip}:{PORT}/metrics",
            "weight": 100,
            "role": "chat",
            "pool": None,
        }
        for name, ip in sorted(pods.items())
    ]
    path = tmp / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    return published_endpoints(path)


Pick = Callable[[list[dict[str, str]]], tuple[str, str, Callable[[], None]]]  # -> (url, pod, done)


async def run_policy(
    client: httpx.AsyncClient,
    policy: str,
    requests: list[list[dict[str, str]]],
    pods: dict[str, str],
    service: str,
    model: str,
    clients: int,
    namespace: str,
) -> tuple[Outcome, float, str]:
    outcome = Outcome()
    rng = random.Random(7)
    in_flight = dict.fromkeys(pods, 0)
    scraping: asyncio.Task[None] | None = None
    router: Router | None = None
    tmp = tempfile.TemporaryDirectory()

    def service_pick(_m: list[dict[str, str]]) -> tuple[str, str, Callable[[], None]]:
        return service, "", lambda: None

    pick: Pick = service_pick
    if policy == "least-load":

        def least_pick(_m: list[dict[str, str]]) -> tuple[str, str, Callable[[], None]]:
            name = min(pods, key=lambda p: (in_flight[p], rng.random()))
            in_flight[name] += 1

            def done() -> None:
                in_flight[name] -= 1

            return f"http://{pods[name]}:{PORT}", name, done

        pick = least_pick
    elif policy == "ours":
        endpoints = published(pods, namespace, model, Path(tmp.name))
        replicas = ReplicaPolicy(scraper=Scraper(interval_s=1.0), rng=rng)
        router = Router(rng=rng, replicas=replicas)
        targets = [(e.name, e.metrics_url or "") for e in endpoints]
        scraping = asyncio.get_running_loop().create_task(replicas.scraper.run(lambda: targets))
        await asyncio.sleep(1.5)  # a first scrape

        def ours_pick(m: list[dict[str, str]], router: Router = router) -> tuple[str, str, Callable[[], None]]:
            endpoint = router.pick(endpoints, set(), None, hint(m))
            if endpoint is None:
                raise RuntimeError("the router picked no replica")
            slot = router.acquire(endpoint)

            def done() -> None:
                slot.release("ok")

            return endpoint.base_url.removesuffix("/v1"), endpoint.name.rsplit("/", 1)[-1], done

        pick = ours_pick

    before = await engine_counters(client, pods)
    load = load_average()
    queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)

    async def one_client() -> None:
        while not queue.empty():
            messages = queue.get_nowait()
            url, pod, done = pick(messages)
            body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": True}
            sent = time.perf_counter()
            try:
                async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
                    if resp.status_code != 200:
                        outcome.failed += 1
                        outcome.errors[f"{resp.status_code} {(await resp.aread())[:120]!r}"] += 1
                        continue
                    first = True
                    async for line in resp.aiter_lines():
                        if first and line.startswith("data: ") and line != "data: [DONE]":
                            outcome.ttft.append(time.perf_counter() - sent)
                            first = False
                    outcome.per_pod[pod or resp.headers.get("x-sdc-replica", "service")] += 1
            except httpx.HTTPError as err:
                outcome.failed += 1
                outcome.errors[type(err).__name__] += 1
            finally:
                done()

    try:
        await asyncio.gather(*(one_client() for _ in range(clients)))
    finally:
        if scraping is not None and router is not None:
            scraping.cancel()
            await router.replicas.scraper.close()
        tmp.cleanup()
    await asyncio.sleep(1.5)  # vLLM's counters are updated with its next stats log
    after = await engine_counters(client, pods)
    hits, queries = after[0] - before[0], after[1] - before[1]
    return outcome, hits / queries if queries else float("nan"), load


async def first_token_s(client: httpx.AsyncClient, url: str, model: str, messages: list[dict[str, str]]) -> float:
    body = {"model": model, "messages": messages, "max_tokens": 2, "stream": True}
    sent = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():  # read to the end: the engine finishes it, nothing aborted
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                first = time.perf_counter() - sent
    if first is None:
        raise RuntimeError("the stream ended before its first token")
    return first


async def prefill_line(
    client: httpx.AsyncClient, urls: dict[str, str], model: str, encode: Encode, rounds: int = SOLO_ROUNDS
) -> tuple[float, float]:
    """TTFT = a + b x (prompt tokens the engine computes), fitted (least squares) to requests sent one at a
    time to an idle pod ({name: base URL}): a document no policy uses, cold, then the same document with
    another question."""
    samples: list[tuple[float, float]] = []
    for r in range(rounds):
        for name, url in urls.items():
            pair = workload(f"solo {name} {r}", 1, 2, seed=r)
            computed = cache_ceiling.unbounded(cache_ceiling.prompts([encode(m) for m in pair], BLOCK)).misses()
            for messages, tokens in zip(pair, computed, strict=True):
                samples.append((float(tokens), await first_token_s(client, url, model, messages)))
    n = len(samples)
    mx, my = sum(x for x, _ in samples) / n, sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    slope = sum((x - mx) * (y - my) for x, y in samples) / sxx if sxx else 0.0
    return my - slope * mx, slope


def two_vllm(release: Release, hub_root: Path, kv_blocks: int = 0) -> tuple[dict[str, str], str, str]:
    """The vLLM LocalLLM at two Ready replicas: {pod: ip}, its Service URL, the served model name.
    `kv_blocks` > 0: each engine's KV cache held to that many blocks of 128 tokens (caches smaller than the
    working set, as in the issue's measurement)."""
    engine: dict[str, Any] = {"maxModelLen": 4096}
    if kv_blocks:
        engine["args"] = ["--block-size=128", f"--num-gpu-blocks-override={kv_blocks}"]
    release.kubectl.apply(
        localllm(
            LLM,
            release.ns,
            "vllm",
            RAG_MODEL,
            replicas=2,
            # Two on the real node's 2 cores beside the chart's pods: 600m each (one OpenMP thread).
            resources={"gpus": 0, "cpu": "600m", "memory": "6Gi"},
            engine=engine,
        )
    )
    ready = wait_until(
        "two Ready vLLM pods",
        lambda: len(ps := [p for p in release.pods(f"llm.sdc.dev/localllm={LLM}") if pod_ready(p)]) == 2 and ps,
        timeout=1800,
        interval=3,
    )
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in ready}
    svc = release.kubectl.get("service", LLM, "-n", release.ns)
    service = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    llm = release.kubectl.get("llm", LLM, "-n", release.ns)
    return pods, service, str(llm["status"].get("servedModelName") or RAG_MODEL)


async def measure(
    pods: dict[str, str],
    service: str,
    model: str,
    namespace: str,
    docs: int,
    per_doc: int,
    clients: int,
    kv_blocks: int = 0,
    encode: Encode | None = None,
) -> list[dict[str, Any]]:
    rows = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as client:
        # Warm both engines (their first requests compile and allocate) with a document no policy uses.
        for _ in range(2):
            for ip in pods.values():
                warm = workload("warm-up", 1, 1, 0)[0]
                await client.post(
                    f"http://{ip}:{PORT}/v1/chat/completions",
                    json={"model": model, "messages": warm, "max_tokens": 2},
                )
        urls = {name: f"http://{ip}:{PORT}" for name, ip in pods.items()}
        line = await prefill_line(client, urls, model, encode) if kv_blocks and encode else None
        if line is not None:
            print(json.dumps({"prefill_ms": line[0] * 1000, "prefill_ms_per_token": line[1] * 1000}), flush=True)
        for policy in POLICIES:
            requests = workload(policy, docs, per_doc, seed=11)
            bounds: dict[str, Any] = {"ceiling": None, "floor_p90_tokens": None, "floor_p90_ms": None}
            if line is not None and encode is not None:
                prompts = cache_ceiling.prompts([encode(m) for m in requests], BLOCK)
                floor = cache_ceiling.floor_p(cache_ceiling.unbounded(prompts), 90)
                bounds = {
                    "ceiling": cache_ceiling.union_belady(prompts, 2 * kv_blocks).rate,
                    "floor_p90_tokens": floor,
                    "floor_p90_ms": (line[0] + line[1] * floor) * 1000,
                }
            started = time.monotonic()
            outcome, hit_rate, load = await run_policy(
                client, policy, requests, pods, service, model, clients, namespace
            )
            total = sum(outcome.per_pod.values())
            row = {
                "policy": policy,
                "requests": len(requests),
                "hit_rate": hit_rate,
                "ttft_p50_ms": percentile(outcome.ttft, 50) * 1000,
                "ttft_p90_ms": percentile(outcome.ttft, 90) * 1000,
                "top_share": max(outcome.per_pod.values()) / total if total and policy != "service" else None,
                "failed": outcome.failed,
                "errors": dict(outcome.errors),
                "seconds": time.monotonic() - started,
                "load": load,
                **bounds,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def report(rows: list[dict[str, Any]], docs: int, per_doc: int, clients: int) -> str:
    service = next((r for r in rows if r["policy"] == "service"), None)
    body = [
        [
            r["policy"],
            r["requests"],
            f"{r['hit_rate']:.2f}",
            f"{r['ttft_p50_ms']:.0f}",
            f"{r['ttft_p90_ms']:.0f}",
            f"{r['ttft_p90_ms'] / service['ttft_p90_ms']:.2f}x" if service else "-",
            f"{r['top_share']:.2f}" if r["top_share"] is not None else "(kube-proxy)",
            r["failed"],
            f"{r['seconds']:.0f}",
            r["load"],
            f"{r['ceiling']:.2f}" if r.get("ceiling") is not None else "-",
            _floor(r, service),
        ]
        for r in rows
    ]
    return "\n".join(
        [
            "## Two real vLLM CPU replicas, shared-prefix Korean RAG (`benchmarks/vllm_prefix_real.py`)",
            "",
            f"Machine: {machine()}. Two pods of one vLLM LocalLLM (the CPU image, a random Llama of 4 layers x 512, max-model-len 4096, 600m CPU and 6Gi each) "
            f"on the real node; {docs} documents ({PASSAGES_PER_DOC} passages each, the system message) x {per_doc} "
            f"questions from {clients} clients, closed loop, {MAX_TOKENS} tokens per answer. Hit rate: the engines' "
            "own counters (vllm:prefix_cache_hits_total / queries_total, deltas over both pods, tokens). Load "
            "average at the start of each policy beside it: the machine is shared.",
            "",
            table(
                [
                    "policy",
                    "requests",
                    "prefix-cache hit rate",
                    "TTFT p50 (ms)",
                    "TTFT p90 (ms)",
                    "p90 vs the Service",
                    "largest pod share",
                    "failed",
                    "run (s)",
                    "load",
                    "ceiling (any router)",
                    "TTFT p90 floor ms (vs the Service)",
                ],
                body,
            ),
            "",
            "Ceiling and floor (with --kv-blocks): benchmarks/cache_ceiling.py on each policy's own trace, "
            "tokenized by the pods' tokenizer; the floor is the prefill of the tokens that even the ceiling "
            "computes at the 90th percentile (a whole cold document: 24 of the 144 requests are documents' "
            "first), timed by the line fitted to solo requests on idle pods. No router's TTFT p90 is below it.",
            "",
        ]
    )


def _floor(row: dict[str, Any], service: dict[str, Any] | None) -> str:
    if row.get("floor_p90_ms") is None:
        return "-"
    text = f"{row['floor_p90_ms']:.0f} ({row['floor_p90_tokens']} tokens"
    if service:
        text += f", {row['floor_p90_ms'] / service['ttft_p90_ms']:.2f}x"
    return text + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the release installed (iterating)")
    parser.add_argument("--kv-blocks", type=int, default=0, help="each engine's KV cache in 128-token blocks")
    args = parser.parse_args()
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        print("vllm_prefix_real: skipped (no local cluster with its real node: `python hack/cluster.py up`)")
        return 0
    kubectl = Kubectl(kubeconfig)
    with tempfile.TemporaryDirectory(prefix="sdc-rag-hub-") as tmp:
        hub_root = prepare_hub(Path(tmp))
        hub.prepare(hub_root, {RAG_MODEL: 1}, shapes={RAG_MODEL: RAG_SHAPE})
        release = new_release(kubectl, kubeconfig, "rag")
        try:
            release.install(hub_root)
            pods, service, model = two_vllm(release, hub_root, args.kv_blocks)
            # The pods' own tokenizer (the hub's copy of the model), for the ceiling and the floor.
            encode = tokenizer_encode(hub_root / "models" / RAG_MODEL) if args.kv_blocks else None
            rows = asyncio.run(
                measure(
                    pods,
                    service,
                    model,
                    release.ns,
                    args.docs,
                    args.questions,
                    args.clients,
                    args.kv_blocks,
                    encode,
                )
            )
        finally:
            if not args.keep:
                release.uninstall()
    text = report(rows, args.docs, args.questions, args.clients)
    write_report("vllm_prefix_real", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
