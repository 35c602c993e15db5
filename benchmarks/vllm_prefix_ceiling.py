"""#23 5a's ceiling: the best prefix-cache hit rate any router could reach on vllm_prefix_real.py's workload,
the TTFT p90 no router can go below, and the policies replayed through simulated vLLM engines.

    python benchmarks/vllm_prefix_ceiling.py [--kv-blocks 96] [--no-sim]

The trace is exactly the one vllm_prefix_real.py sends (`workload(policy, 24, 6, seed=11)`: each policy's
own 24 documents, the same shuffled order), tokenized by the engines' own tokenizer (sdc_runtime.tiny's,
which the in-cluster hub serves with the model) through its chat template, as vLLM does. Figures
(benchmarks/cache_ceiling.py for what each one means):

- ceiling: `unbounded` (one engine that never evicts) and `union_belady` over 2 x kv-blocks blocks: upper
  bounds for any router; `by-document LRU` and the best of SPLITS random splits: achievable figures
  (documents split 12/12, vLLM's LRU, one request at a time, each engine's usable blocks one fewer than
  configured: vLLM keeps a null block). The ceiling lies between the best achievable and the bound.
- floor: the prefill tokens at the 90th (and 50th) percentile that even `unbounded` must do: every
  document's first request is cold for any router, and 24 of the 144 requests are first requests, so the
  p90 request (rank 130 of 144) is a whole cold prompt. No router's TTFT p90 is below that prefill's time.
- sim: the same trace through two discrete-event vLLM-like engines (continuous batching, a block pool of
  kv-blocks blocks with vLLM's free queue, prefill time per uncached token), 4 closed-loop clients, the
  scraper's readings once a simulated second, routed by the orchestrator's own ReplicaPolicy: where ours
  stands against the ceiling on the same requests, without the real node.

Beside them, the figures measured on two real vLLM CPU replicas (benchmarks/REPORT.md, `--kv-blocks 96`).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import tempfile
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "orchestrator"))
from sdc_orchestrator.backends import Endpoint
from sdc_orchestrator.routing.policy import SINGLE_STRETCH, Hint, ReplicaPolicy, hint
from sdc_orchestrator.routing.scrape import Scraper, Signals

from benchmarks import cache_ceiling as cc
from benchmarks.common import percentile, table, write_report

BLOCK = 128
DOCS, QUESTIONS, CLIENTS, SEED = 24, 6, 4, 11
MAX_TOKENS = 8
SPLITS = 300  # random equal splits of the documents tried for the achievable figure
# Measured on two real vLLM CPU replicas, `vllm_prefix_real.py --kv-blocks 96` (benchmarks/REPORT.md):
# hit rate, TTFT p50 ms, TTFT p90 ms.
MEASURED = {"service": (0.37, 160.0, 689.0), "least-load": (0.42, 232.0, 793.0), "ours": (0.65, 102.0, 384.0)}

Messages = list[dict[str, str]]


def tokenizer_encode(model_dir: Path | None = None) -> Callable[[Messages], list[int]]:
    """The engines' tokenizer and chat template, rendered and encoded as vLLM's chat endpoint does: the
    model's own directory (the hub's copy, what the pods load), or a fresh sdc_runtime.tiny build (a
    byte-level BPE trained on a fixed corpus: the same tokenizer in every build)."""
    from transformers import AutoTokenizer

    if model_dir is None:
        from sdc_runtime.tiny import make_tiny_model

        with tempfile.TemporaryDirectory(prefix="sdc-ceiling-") as tmp:
            make_tiny_model(Path(tmp), hidden_size=32, heads=1, kv_heads=1, layers=1, max_positions=4096)
            tok = AutoTokenizer.from_pretrained(tmp)
    else:
        tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(messages: Messages) -> list[int]:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    return encode


def trace(policy: str, encode: Callable[[Messages], list[int]]) -> tuple[list[Messages], list[cc.Prompt]]:
    from benchmarks.vllm_prefix_real import workload

    requests = workload(policy, DOCS, QUESTIONS, SEED)
    return requests, cc.prompts([encode(m) for m in requests], BLOCK)


# -- a vLLM-like engine, in simulated time ----------------------------------------------------------------


@dataclass
class Running:
    index: int
    keyed: list[int]  # its blocks that carry a prefix key (shared, cached once full)
    private: int  # blocks without a key (the partial last one, and those the answer fills)
    answered: list[int]  # keys no prompt shares, for the blocks the answer fills: cached when it finishes
    decode_left: int
    new: bool = True


@dataclass
class Engine:
    """Continuous batching over a block pool as vLLM's v1 scheduler does it, in miniature. A step admits
    every waiting request whose blocks fit (FIFO), prefills their uncached tokens and decodes one token
    for the rest; it lasts STEP_S + PREFILL_S x prefilled tokens + DECODE_S x decoding rows."""

    blocks: int  # usable (vLLM keeps one null block aside)
    free: OrderedDict[int, None] = field(default_factory=OrderedDict)  # cached and unreferenced, LRU first
    refs: dict[int, int] = field(default_factory=dict)  # cached and referenced
    private: int = 0
    waiting: deque[tuple[int, cc.Prompt]] = field(default_factory=deque)
    running: list[Running] = field(default_factory=list)
    busy: bool = False
    queries: int = 0
    hits: int = 0
    junk: int = 0

    def in_use(self) -> int:
        return len(self.refs) + self.private

    def admit(self, index: int, p: cc.Prompt) -> tuple[Running, int] | None:
        hit = 0
        while hit < p.hittable and (p.keys[hit] in self.free or p.keys[hit] in self.refs):
            hit += 1
        need = math.ceil((p.tokens + MAX_TOKENS) / p.block)
        fresh = need - hit
        if fresh > self.blocks - self.in_use() - sum(1 for k in p.keys[:hit] if k in self.free):
            return None
        for key in p.keys[:hit]:
            self.free.pop(key, None)
            self.refs[key] = self.refs.get(key, 0) + 1
        keyed = list(p.keys[:hit])
        for key in p.keys[hit:]:  # cached as they are allocated: a later request may hit them at once
            self.free.pop(key, None)
            self.refs[key] = self.refs.get(key, 0) + 1
            keyed.append(key)
        private = need - len(keyed)
        self.private += private
        while len(self.free) > self.blocks - self.in_use():
            self.free.popitem(last=False)
        self.queries += p.tokens
        self.hits += hit * p.block
        answered = []
        for _ in range(len(p.keys), (p.tokens + MAX_TOKENS) // p.block):
            self.junk -= 1
            answered.append(self.junk)
        return Running(index, keyed, private, answered, MAX_TOKENS - 1), p.tokens - hit * p.block

    def finish(self, r: Running) -> None:
        self.private -= r.private
        for key in reversed(r.answered):  # the tail: freed first, evicted first
            self.free[key] = None
        for key in reversed(r.keyed):  # then the prompt, tail first: heads outlive tails
            self.refs[key] -= 1
            if self.refs[key] == 0:
                del self.refs[key]
                self.free[key] = None


STEP_S = 0.012
# Per uncached prompt token: a cold ~990-token prompt about 0.45 s on a 600m CPU pod. Not measured (the real
# pods are not here): the sensitivity table runs the sim at other costs too.
PREFILL_S = 0.00045
PREFILL_COSTS = (0.00012, 0.00025, PREFILL_S)
DECODE_S = 0.004


@dataclass
class SimResult:
    hit_rate: float
    ttft: list[float]
    per_replica: list[int]


class SimScraper(Scraper):
    """The scraper's interface over readings the simulation hands it (no HTTP)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(interval_s=1.0, clock=clock)
        self.readings: dict[str, Signals] = {}

    def signals(self, name: str) -> Signals | None:
        return self.readings.get(name)

    def read(self, name: str, signals: Signals) -> None:
        self.readings[name] = signals
        if self.on_reading is not None:
            self.on_reading(name)


Route = Callable[[int, Messages, Callable[[int], int]], int]


def simulate(
    requests: Sequence[Messages],
    prompts: Sequence[cc.Prompt],
    route_name: str,
    kv_blocks: int,
    seed: int = 7,
    prefill_s: float = PREFILL_S,
    clients: int = CLIENTS,
) -> SimResult:
    rng = random.Random(seed)
    now = 0.0
    engines = [Engine(kv_blocks - 1), Engine(kv_blocks - 1)]
    names = ["rag-0", "rag-1"]
    endpoints = [
        Endpoint(n, "vllm", f"http://{n}/v1", "rag", namespace="bench", metrics_url=f"http://{n}/metrics")
        for n in names
    ]
    in_flight = [0, 0]
    scraper = SimScraper(lambda: now)
    policy = ReplicaPolicy(scraper=scraper, rng=rng)
    partition = cc.by_document(prompts, 2)

    def route(i: int) -> int:
        if route_name == "service":
            return rng.randrange(2)
        if route_name == "least-load":
            return min(range(2), key=lambda j: (in_flight[j], rng.random()))
        if route_name == "by-document":
            return partition[i]
        policy.single_stretch = 0.0 if route_name == "ours, no single-turn stretch" else SINGLE_STRETCH
        h: Hint = hint(requests[i])
        chosen = policy.choose(endpoints, lambda e: in_flight[names.index(e.name)], h)
        return names.index(chosen.name)

    events: list[tuple[float, int, str, int]] = []
    seq = 0

    def at(t: float, kind: str, arg: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, arg))

    sent: dict[int, float] = {}
    ttft: list[float] = []
    per_replica = [0, 0]
    nxt = 0

    def send() -> None:
        nonlocal nxt
        if nxt >= len(prompts):
            return
        i, nxt = nxt, nxt + 1
        r = route(i)
        in_flight[r] += 1
        per_replica[r] += 1
        sent[i] = now
        engines[r].waiting.append((i, prompts[i]))
        if not engines[r].busy:
            step(r)

    def step(r: int) -> None:
        e = engines[r]
        prefill = 0
        while e.waiting:
            admitted = e.admit(*e.waiting[0])
            if admitted is None:
                break
            e.waiting.popleft()
            e.running.append(admitted[0])
            prefill += admitted[1]
        if not e.running:
            e.busy = False
            return
        e.busy = True
        decoding = sum(1 for x in e.running if not x.new)
        at(now + STEP_S + prefill_s * prefill + DECODE_S * decoding, "step", r)

    def step_done(r: int) -> None:
        e = engines[r]
        still = []
        for x in e.running:
            if x.new:
                ttft.append(now - sent[x.index])
                x.new = False
            elif x.decode_left > 0:
                x.decode_left -= 1
            if x.decode_left == 0 and not x.new:
                e.finish(x)
                in_flight[r] -= 1
                at(now, "client", 0)
            else:
                still.append(x)
        e.running = still
        step(r)

    for c in range(clients):
        at(0.001 * c, "client", 0)
    at(rng.uniform(0, 1.0), "scrape", 0)
    while events:
        now, _, kind, arg = heapq.heappop(events)
        if kind == "client":
            send()
        elif kind == "step":
            step_done(arg)
        elif kind == "scrape":
            for name, e in zip(names, engines, strict=True):
                usage = e.in_use() / e.blocks
                scraper.read(name, Signals(len(e.waiting), len(e.running), usage, e.queries, e.hits, now))
            if nxt < len(prompts) or any(x.running for x in engines):
                at(now + 1.0, "scrape", 0)
    queries = sum(e.queries for e in engines)
    return SimResult(sum(e.hits for e in engines) / queries, ttft, per_replica)


SIM_POLICIES = ("service", "least-load", "ours, no single-turn stretch", "ours", "by-document")


def report(kv_blocks: int, sim: bool, seeds: int) -> str:
    encode = tokenizer_encode()
    rows, notes = [], []
    for policy in ("service", "least-load", "ours"):
        requests, prompts = trace(policy, encode)
        unbounded = cc.unbounded(prompts)
        belady = cc.union_belady(prompts, 2 * kv_blocks)
        lru = cc.lru_replay(prompts, cc.by_document(prompts, 2), 2, kv_blocks - 1, MAX_TOKENS)
        split = cc.best_split(prompts, 2, kv_blocks - 1, MAX_TOKENS, SPLITS, random.Random(SEED))
        measured = MEASURED[policy]
        rows.append(
            [
                policy,
                f"{measured[0]:.2f}",
                f"{unbounded.rate:.3f}",
                f"{belady.rate:.3f}",
                f"{lru.rate:.3f}",
                f"{split.rate:.3f}",
                cc.floor_p(unbounded, 50),
                cc.floor_p(unbounded, 90),
                f"{measured[2]:.0f}",
            ]
        )
        if policy == "ours":
            cold = [q for q, h in zip(unbounded.queries, unbounded.hits, strict=True) if h == 0]
            later = sum(unbounded.queries) - sum(cold)
            notes.append(
                f"- Why {unbounded.rate:.3f}: {len(prompts)} requests, {sum(unbounded.queries)} prompt tokens; the "
                f"{len(cold)} first requests of the documents ({sum(cold)} tokens, "
                f"{sum(cold) / sum(unbounded.queries):.1%}) are cold for any router; the other "
                f"{len(prompts) - len(cold)} can hit at most their whole 128-token blocks shared with an earlier "
                f"prompt, {sum(unbounded.hits)} of their {later} tokens ({sum(unbounded.hits) / later:.1%}: the "
                "question, the template's tail and the document's last partial block are never shared). "
                f"{1 - sum(cold) / sum(unbounded.queries):.3f} x {sum(unbounded.hits) / later:.3f} = "
                f"{unbounded.rate:.3f} < 0.80."
            )
    lines = [
        "## #23 5a's ceiling (`benchmarks/vllm_prefix_ceiling.py`)",
        "",
        f"The exact trace of `vllm_prefix_real.py --kv-blocks {kv_blocks}` ({DOCS} documents x {QUESTIONS} "
        f"questions, seed {SEED}, each policy's own documents), tokenized by the engines' tokenizer and chat "
        f"template; blocks of {BLOCK} tokens, 2 replicas of {kv_blocks} blocks. Hit rates in tokens as vLLM "
        "counts them; floors in prompt tokens that even the ceiling must prefill (a TTFT no router beats).",
        "",
        table(
            [
                "workload of",
                "measured hit rate (real vLLM)",
                "ceiling: unbounded cache",
                f"ceiling: Belady over 2 x {kv_blocks} blocks",
                "achievable: by document, LRU",
                f"achievable: best of {SPLITS} splits",
                "floor p50 (tokens)",
                "floor p90 (tokens)",
                "measured TTFT p90 ms",
            ],
            rows,
        ),
        "",
        *notes,
    ]
    if sim:
        requests, prompts = trace("ours", encode)
        floor = cc.floor_p(cc.unbounded(prompts), 90)
        body = []
        for name in SIM_POLICIES:
            results = [simulate(requests, prompts, name, kv_blocks, seed) for seed in range(seeds)]
            hits = [r.hit_rate for r in results]
            p50 = [percentile(r.ttft, 50) * 1000 for r in results]
            p90 = [percentile(r.ttft, 90) * 1000 for r in results]
            share = [max(r.per_replica) / sum(r.per_replica) for r in results]
            body.append(
                [
                    name,
                    f"{sum(hits) / seeds:.3f} ({min(hits):.3f}-{max(hits):.3f})",
                    f"{sum(p50) / seeds:.0f}",
                    f"{sum(p90) / seeds:.0f}",
                    f"{sum(share) / seeds:.2f}",
                ]
            )
            print(name, body[-1], flush=True)
        sensitivity, floors, splits = [], [], []
        for cost in PREFILL_COSTS:
            p90s = {
                name: sum(
                    percentile(simulate(requests, prompts, name, kv_blocks, s, cost).ttft, 90) for s in range(seeds)
                )
                / seeds
                for name in ("service", "ours", "by-document")
            }
            floor_s = STEP_S + cost * floor
            floors.append(floor_s / p90s["service"])
            splits.append(p90s["by-document"] / p90s["service"])
            sensitivity.append(
                [
                    f"{cost * 1000:.2f}",
                    f"{p90s['service'] * 1000:.0f}",
                    f"{p90s['ours'] * 1000:.0f} ({p90s['ours'] / p90s['service']:.2f}x)",
                    f"{p90s['by-document'] * 1000:.0f} ({p90s['by-document'] / p90s['service']:.2f}x)",
                    f"{floor_s * 1000:.0f} ({floor_s / p90s['service']:.2f}x)",
                ]
            )
        lines += [
            "",
            f"Simulated vLLM-like engines, the same trace ('ours' documents), {seeds} seeds (routing's and the "
            f"scrape phase's chance): prefill {PREFILL_S * 1000:.2f} ms per uncached token, steps of "
            f"{STEP_S * 1000:.0f} ms + {DECODE_S * 1000:.0f} ms per decoding row, {MAX_TOKENS} tokens per answer. "
            "`by-document`: the oracle's 12/12 split of the documents.",
            "",
            table(["policy", "hit rate mean (range)", "TTFT p50 ms", "TTFT p90 ms", "largest share"], body),
            "",
            "TTFT p90 against the simulated Service's at other prefill costs (means over the seeds); floor: one "
            f"step with the {floor} tokens that even the ceiling prefills at the 90th percentile, no queue:",
            "",
            table(
                ["prefill ms/token", "Service p90 ms", "ours p90 ms", "by-document p90 ms", "floor ms"],
                sensitivity,
            ),
            "",
            f"- TTFT p90 <= 1/3 of the Service's is out of reach: {QUESTIONS}-question documents make 1 request "
            f"in {QUESTIONS} a document's first, cold for any router, so the p90 request prefills a whole "
            f"document ({floor} tokens). At each prefill cost in the table, that floor is {min(floors):.2f}-"
            f"{max(floors):.2f}x of the Service's p90 and the oracle's split reaches {min(splits):.2f}-"
            f"{max(splits):.2f}x. On the real pods, `vllm_prefix_real.py --kv-blocks {kv_blocks}` times the floor.",
        ]
    return "\n".join([*lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kv-blocks", type=int, default=96)
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--seeds", type=int, default=24)
    args = parser.parse_args()
    text = report(args.kv_blocks, not args.no_sim, args.seeds)
    print(text)
    write_report("vllm_prefix_ceiling", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
