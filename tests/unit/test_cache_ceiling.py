"""The ceiling of prefix-cache hit rates (benchmarks/cache_ceiling.py) on traces small enough to check by hand."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import httpx
import pytest

from benchmarks import cache_ceiling as cc

# Blocks of 2 tokens. A document is its first block(s); a "question" is what follows.
A = [1, 1, 9]  # one full block (1 1) and a partial one
B = [2, 2, 9]
C = [3, 3, 9]


def test_hittable_leaves_the_last_token_to_the_engine() -> None:
    five, four = cc.prompts([[1, 2, 3, 4, 5], [1, 2, 3, 4]], 2)
    assert five.keys[0] == four.keys[0] and five.keys[1] == four.keys[1]
    assert five.hittable == 2  # tokens 1-4 cached, the fifth computed
    assert four.hittable == 1  # whole prompt cached: vLLM still recomputes its last block (n - 1 tokens)


def test_keys_are_chained_so_a_shared_later_block_after_a_different_head_is_no_hit() -> None:
    x, y = cc.prompts([[1, 2, 3, 4], [9, 9, 3, 4]], 2)
    assert x.keys[1] != y.keys[1]
    assert cc.unbounded([x, y]).hits == (0, 0)


def test_unbounded_by_hand() -> None:
    trace = cc.prompts([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4], [1, 2, 7, 7, 7]], 2)
    tally = cc.unbounded(trace)
    assert tally.hits == (0, 4, 2, 2)
    assert tally.rate == pytest.approx(8 / 19)
    assert tally.misses() == [5, 1, 2, 3]


def test_belady_keeps_what_comes_back_soonest_and_bypasses_the_rest() -> None:
    # A B C A B C with room for two blocks in all: keep A and B, never C: 2 hits of 2 tokens. LRU keeps
    # the last two seen and hits nothing.
    trace = cc.prompts([A, B, C, A, B, C], 2)
    tally = cc.union_belady(trace, 2)
    assert tally.hits == (0, 0, 0, 2, 2, 0)
    assert tally.rate == pytest.approx(4 / 18)
    assert cc.lru_replay(trace, [0] * 6, 1, 2).hits == (0,) * 6
    # Room for everything: the bound is the unbounded cache's.
    assert cc.union_belady(trace, 3) == cc.unbounded(trace)
    assert cc.union_belady(trace, 0).rate == 0.0


def test_lru_replay_frees_tails_first_so_a_prompts_head_survives() -> None:
    x, y = cc.prompts([[1, 1, 2, 2, 7], [5, 5, 7]], 2)
    # An engine of 3 blocks: x takes 3 (two full, one partial); y takes 2, so one cached block must go.
    # x's tail (its second block) goes, its head stays: x again hits one block.
    tally = cc.lru_replay([x, y, x], [0, 0, 0], 1, 3)
    assert tally.hits == (0, 0, 2)


def test_lru_replay_counts_blocks_an_answer_fills() -> None:
    x, y = cc.prompts([[1, 1, 7], [5, 5, 7]], 2)
    # 3 tokens + 1 generated = 2 full blocks each: the block the answer filled is cached too, and freed
    # first (the tail), so it is what y evicts from an engine of 3 blocks; of 2, y evicts everything.
    assert cc.lru_replay([x, y, x], [0, 0, 0], 1, 3, generated=1).hits == (0, 0, 2)
    assert cc.lru_replay([x, y, x], [0, 0, 0], 1, 2, generated=1).hits == (0, 0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        cc.lru_replay([x], [0], 1, 1, generated=1)


def test_by_document_splits_documents_in_equal_shares_of_requests() -> None:
    trace = cc.prompts([A, A, A, B, C, B, C], 2)
    assignment = cc.by_document(trace, 2)
    assert assignment[:3] == [0, 0, 0]  # A, the largest, alone on one replica (3 requests)
    assert set(assignment[3:]) == {1}  # B and C (2 + 2) on the other
    # Each on its own replica of one block's room: every repeat hits.
    trace = cc.prompts([A, B, A, B], 2)
    assert cc.lru_replay(trace, cc.by_document(trace, 2), 2, 2).hits == (0, 0, 2, 2)
    assert cc.lru_replay(trace, [0, 0, 0, 0], 2, 2).hits == (0, 0, 0, 0)


def test_best_split_finds_the_split_that_keeps_what_comes_back() -> None:
    # Engines of 2 blocks: a request takes both (one full, one partial), so a replica keeps only its last
    # document. A and B apart (3 requests each), C with one of them: C's replica loses one repeat to it.
    # Every split hits 3 of the 4 repeats at best (6 tokens); all of them stay under the bound.
    trace = cc.prompts([A, B, A, C, B, A, B], 2)
    best = cc.best_split(trace, 2, 2, 0, 20, random.Random(1))  # noqa: S311 - a fixed search
    assert best.rate >= cc.lru_replay(trace, cc.by_document(trace, 2), 2, 2).rate
    assert best.rate <= cc.union_belady(trace, 4).rate
    assert sum(best.hits) == 2 * 3
    assert sum(cc.lru_replay(trace, [0] * 7, 2, 2).hits) == 0  # all on one replica: every request evicts


def test_no_assignment_beats_the_bounds() -> None:
    """Exhaustively, on small random traces: every assignment of requests to 2 replicas replayed through
    LRU engines stays under Belady over the union of the caches, which stays under the unbounded cache."""
    rng = random.Random(3)  # noqa: S311 - a fixed trace, not a secret
    docs = [[d, d, d, d, 9] for d in range(1, 5)]  # two full blocks each
    for _ in range(20):
        trace = cc.prompts([[*rng.choice(docs)[:-1], rng.randrange(50, 99)] for _ in range(8)], 2)
        unbounded = cc.unbounded(trace).rate
        for per_replica in (3, 4, 6):
            bound = cc.union_belady(trace, 2 * per_replica).rate
            assert bound <= unbounded + 1e-12
            best = max(
                cc.lru_replay(trace, list(assignment), 2, per_replica).rate
                for assignment in itertools.product((0, 1), repeat=len(trace))
            )
            assert best <= bound + 1e-12


def test_floor_is_the_nearest_rank_percentile_of_what_even_the_ceiling_prefills() -> None:
    trace = cc.prompts([A, A, A, A, B], 2)
    tally = cc.unbounded(trace)
    assert tally.misses() == [3, 1, 1, 1, 3]
    assert cc.floor_p(tally, 50) == 1
    assert cc.floor_p(tally, 90) == 3


def synthetic(docs: int, per_doc: int, seed: int) -> tuple[list[list[dict[str, str]]], list[cc.Prompt]]:
    """Documents of 3 blocks of 4 tokens and a 3-token question, in a shuffled order; the messages carry
    the same documents as text (what the router's hint reads)."""
    rng = random.Random(seed)  # noqa: S311 - a fixed trace
    pairs = [(d, rng.randrange(100, 999)) for d in range(docs) for _ in range(per_doc)]
    rng.shuffle(pairs)
    tokens = [[1000 + d] * 12 + [q, q, q] for d, q in pairs]
    messages = [
        [{"role": "system", "content": f"{d}번 문서 " * 40}, {"role": "user", "content": str(q)}] for d, q in pairs
    ]
    return messages, cc.prompts(tokens, 4)


def test_the_simulated_engines_free_queue_is_lru_replays() -> None:
    """Two implementations of vLLM's free queue agree: the discrete-event engines with one client (one
    request at a time) hit exactly what lru_replay hits for the same assignment."""
    from benchmarks.vllm_prefix_ceiling import MAX_TOKENS, simulate

    messages, trace = synthetic(6, 5, seed=2)
    kv_blocks = 13  # 12 usable: two documents of 3 blocks and a running request's 6 blocks
    ran = simulate(messages, trace, "by-document", kv_blocks, clients=1)
    replayed = cc.lru_replay(trace, cc.by_document(trace, 2), 2, kv_blocks - 1, MAX_TOKENS)
    assert 0 < replayed.rate < cc.unbounded(trace).rate  # the caches are small enough to evict
    assert ran.hit_rate == pytest.approx(replayed.rate)


def test_no_simulated_policy_beats_the_bound() -> None:
    from benchmarks.vllm_prefix_ceiling import SIM_POLICIES, simulate

    messages, trace = synthetic(8, 6, seed=4)
    bound = cc.union_belady(trace, 2 * 13).rate
    for policy in SIM_POLICIES:
        for seed in range(3):
            assert simulate(messages, trace, policy, 13, seed).hit_rate <= bound + 1e-12, policy


def test_the_floor_is_timed_by_a_line_fitted_to_a_real_servers_first_tokens(tmp_path: Path) -> None:
    """vllm_prefix_real's floor: solo requests (a cold document, then the same one with another question)
    streamed from real HTTP engines (engine_sim's, whose prefill time is per uncached character), the line
    fitted to their first tokens; the report carries the ceiling and the floor beside the measured p90."""
    pytest.importorskip("transformers")
    from sdc_runtime.tiny import make_tiny_model

    from benchmarks import vllm_prefix_real as real
    from benchmarks.engine_sim import PREFILL_S_PER_CHAR, fleet_in_thread, prompt_text
    from benchmarks.vllm_prefix_ceiling import tokenizer_encode

    encode = tokenizer_encode(make_tiny_model(tmp_path / "tok", hidden_size=32, heads=1, kv_heads=1, layers=1))
    with fleet_in_thread(2) as fleet:

        async def fit() -> tuple[float, float]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await real.prefill_line(client, dict(enumerate(fleet.urls)), "sim", encode, rounds=1)

        intercept, per_token = asyncio.run(fit())
    # These engines prefill per uncached character: a cold document takes hundreds of milliseconds, a warm
    # one a few. The line rises, and at a cold document's size it says what such a prefill takes.
    assert per_token > 0
    cold = real.workload("solo 0 0", 1, 2, seed=0)[0]
    expected = len(prompt_text(cold)) * PREFILL_S_PER_CHAR
    assert 0.5 * expected < intercept + per_token * len(encode(cold)) < 2 * expected
    rows = [
        {"policy": "service", "requests": 144, "hit_rate": 0.37, "ttft_p50_ms": 160.0, "ttft_p90_ms": 689.0,
         "top_share": None, "failed": 0, "seconds": 19.0, "load": "1 1 1", "ceiling": 0.734,
         "floor_p90_tokens": 979, "floor_p90_ms": 400.0},
        {"policy": "ours", "requests": 144, "hit_rate": 0.65, "ttft_p50_ms": 102.0, "ttft_p90_ms": 384.0,
         "top_share": 0.53, "failed": 0, "seconds": 15.0, "load": "1 1 1", "ceiling": 0.736,
         "floor_p90_tokens": 976, "floor_p90_ms": 399.0},
    ]  # fmt: skip
    text = real.report(rows, 24, 6, 4)
    assert "| ceiling (any router) | TTFT p90 floor ms (vs the Service) |" in text
    assert "| 0.74 | 399 (976 tokens, 0.58x) |" in text
