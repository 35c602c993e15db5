"""The best prefix-cache hit rate any router could reach on a trace, and the prefill no router can skip.

Pure functions over a trace of prompts (token ids in arrival order), counted as vLLM counts them: a
prompt is cut into blocks of `block` tokens, each block's key chained to the ones before (so a key
stands for the whole prefix up to it); only full blocks are cached; a hit is the leading run of the
prompt's blocks found in the chosen engine's cache, and never covers the last token (vLLM recomputes
it for the logits: `max_cache_hit_length = num_tokens - 1`), so a prompt of n tokens can hit at most
(n - 1) // block blocks. The engine-reported hit rate is hit tokens over prompt tokens.

Three figures bracket what routing can do over R replicas of C blocks each:

- `unbounded`: one engine whose cache never evicts, seeing every request. Every request hits the longest
  prefix it shares with any earlier request: no router over any number of replicas of any size hits more,
  request by request (so its per-request misses are also the prefill no router can skip: `floor`).
- `union_belady`: one cache of R x C blocks run by Belady's rule (evict the block whose next use is
  farthest; do not keep a block that comes back later than everything held), counting every cached
  block of a request as a hit even when an earlier block is missing. Any router's R caches hold at most
  R x C distinct blocks at any moment and only gain a block when a request uses it, so their union is a
  schedule of such a cache, and a request's hits on its replica are hits of the union; Belady's rule with
  bypass keeps the most of them (unit-size blocks). An upper bound tighter than `unbounded` when the
  caches are smaller than the working set.
- `lru_replay`: an achievable figure, a given assignment (request -> replica) through vLLM-like engines
  (an LRU free queue; a finished request's blocks freed tail first, so heads outlive tails; its partial
  last block, which has no hash, reused first), one request at a time. `by_document`: the oracle's simple
  router for single-turn RAG, documents (first block) split across replicas in equal numbers of requests;
  `best_split`: the best of many such splits.

When `lru_replay` of some assignment equals an upper bound, that bound is the ceiling exactly.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    keys: tuple[int, ...]  # chained keys of its full blocks
    tokens: int
    block: int

    @property
    def hittable(self) -> int:
        """Blocks a hit may cover: vLLM computes at least the last token itself."""
        return min(len(self.keys), (self.tokens - 1) // self.block)


@dataclass(frozen=True)
class Tally:
    hits: tuple[int, ...]  # hit tokens, per request
    queries: tuple[int, ...]  # prompt tokens, per request

    @property
    def rate(self) -> float:
        total = sum(self.queries)
        return sum(self.hits) / total if total else 0.0

    def misses(self) -> list[int]:
        """Prompt tokens each request had to prefill."""
        return [q - h for q, h in zip(self.queries, self.hits, strict=True)]


class Keys:
    """Chained block keys, interned to small ints: equal keys mean equal prefixes (no hash collisions)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, tuple[Hashable, ...]], int] = {}

    def prompt(self, tokens: Sequence[Hashable], block: int) -> Prompt:
        if block < 1:
            raise ValueError("block must be at least one token")
        keys, key = [], -1
        for start in range(0, len(tokens) // block * block, block):
            key = self._ids.setdefault((key, tuple(tokens[start : start + block])), len(self._ids))
            keys.append(key)
        return Prompt(tuple(keys), len(tokens), block)


def prompts(traces: Sequence[Sequence[Hashable]], block: int) -> list[Prompt]:
    keys = Keys()
    return [keys.prompt(t, block) for t in traces]


def _tally(trace: Sequence[Prompt], hit_blocks: Sequence[int]) -> Tally:
    return Tally(tuple(b * p.block for b, p in zip(hit_blocks, trace, strict=True)), tuple(p.tokens for p in trace))


def _leading(keys: Sequence[int], limit: int, held: set[int] | OrderedDict[int, None]) -> int:
    n = 0
    while n < limit and keys[n] in held:
        n += 1
    return n


def unbounded(trace: Sequence[Prompt]) -> Tally:
    """One engine that never evicts: each request's longest prefix shared with any earlier request."""
    seen: set[int] = set()
    hits = []
    for p in trace:
        hits.append(_leading(p.keys, p.hittable, seen))
        seen.update(p.keys)
    return _tally(trace, hits)


def union_belady(trace: Sequence[Prompt], capacity: int) -> Tally:
    """Upper bound for any router over replicas whose caches hold `capacity` blocks in all (see the module)."""
    accesses = [(i, pos, key) for i, p in enumerate(trace) for pos, key in enumerate(p.keys)]
    never = math.inf
    next_use: list[float] = [never] * len(accesses)
    last: dict[int, int] = {}
    for t in range(len(accesses) - 1, -1, -1):
        key = accesses[t][2]
        next_use[t] = last.get(key, never)
        last[key] = t
    held: dict[int, float] = {}  # key -> its next use
    farthest: list[tuple[float, int]] = []  # (-next use, key), stale entries skipped
    hits = [0] * len(trace)
    for t, (i, pos, key) in enumerate(accesses):
        if key in held:
            if pos < trace[i].hittable:
                hits[i] += 1
            held[key] = next_use[t]
            heapq.heappush(farthest, (-next_use[t], key))
            continue
        if next_use[t] == never or capacity <= 0:
            continue  # not kept: nothing would hit it (or there is no room at all)
        if len(held) >= capacity:
            while -farthest[0][0] != held.get(farthest[0][1]):
                heapq.heappop(farthest)  # stale: the key was used (or dropped) since
            if -farthest[0][0] <= next_use[t]:
                continue  # everything held comes back sooner than this block: bypass it
            del held[heapq.heappop(farthest)[1]]
        held[key] = next_use[t]
        heapq.heappush(farthest, (-next_use[t], key))
    return _tally(trace, hits)


def lru_replay(
    trace: Sequence[Prompt], assignment: Sequence[int], replicas: int, blocks: int, generated: int = 0
) -> Tally:
    """Each request on its assigned replica, engines of `blocks` usable blocks with vLLM's free queue,
    one request at a time (no two running at once). `generated`: tokens each answer adds to its last blocks."""
    queues: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(replicas)]  # cached and free, LRU first
    hits, junk = [], 0
    for p, r in zip(trace, assignment, strict=True):
        queue = queues[r]
        hit = _leading(p.keys, p.hittable, queue)
        hits.append(hit)
        for key in p.keys[:hit]:
            del queue[key]  # in use: out of the free queue
        needed = math.ceil((p.tokens + generated) / p.block)
        if needed > blocks:
            raise ValueError(f"a request of {needed} blocks does not fit an engine of {blocks}")
        while len(queue) > blocks - needed:
            queue.popitem(last=False)  # a free block reused: its cached prefix evicted
        # Freed tail first, so the prompt's head is the most recently used; blocks without a hash (the
        # partial last one) go to the front and hold nothing. A block the answer filled has a hash no
        # prompt shares: it takes room all the same.
        answered = []
        for _ in range(len(p.keys), (p.tokens + generated) // p.block):
            junk -= 1
            answered.append(junk)
        for key in reversed([*p.keys, *answered]):
            queue[key] = None
    return _tally(trace, hits)


def by_document(trace: Sequence[Prompt], replicas: int, order: Sequence[int] | None = None) -> list[int]:
    """The requests' replicas when whole documents (a prompt's first block) are split across replicas in
    equal shares of requests: the largest documents first (or in `order`, a permutation of the documents
    by first appearance), each to the replica with the fewest requests so far."""
    counts: dict[int, int] = {}
    for p in trace:
        first = p.keys[0] if p.keys else -1
        counts[first] = counts.get(first, 0) + 1
    documents = list(counts)
    if order is None:
        documents.sort(key=lambda d: (-counts[d], d))
    else:
        documents = [documents[i] for i in order]
    load = [0] * replicas
    home: dict[int, int] = {}
    for first in documents:
        r = min(range(replicas), key=lambda j: (load[j], j))
        home[first], load[r] = r, load[r] + counts[first]
    return [home[p.keys[0] if p.keys else -1] for p in trace]


def best_split(
    trace: Sequence[Prompt], replicas: int, blocks: int, generated: int, tries: int, rng: random.Random
) -> Tally:
    """The best `lru_replay` over `tries` random equal splits of the documents (and `by_document`'s own):
    an achievable hit rate, found by search (so a lower bound on the best router's)."""
    documents = len({p.keys[0] if p.keys else -1 for p in trace})
    best = lru_replay(trace, by_document(trace, replicas), replicas, blocks, generated)
    for _ in range(tries):
        order = rng.sample(range(documents), documents)
        tally = lru_replay(trace, by_document(trace, replicas, order), replicas, blocks, generated)
        if tally.rate > best.rate:
            best = tally
    return best


def floor_p(tally: Tally, pct: float) -> int:
    """The pct-th percentile (nearest rank, as benchmarks.common.percentile) of the prefill each request
    must do under `unbounded`: no router's TTFT percentile is below the time to prefill that many tokens."""
    ordered = sorted(tally.misses())
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]
