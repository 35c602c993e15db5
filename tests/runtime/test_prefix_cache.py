"""The prefix cache on a tiny real model: reused KV blocks change nothing but the work.

Two engines over the same model, one with the cache and one without, answer the same requests;
greedy (and seeded) output must be identical in every case: an exact repeat, a shared prefix with
another suffix, a cache too small to keep everything (evicted, least recently used first), and
requests that join a batch together with and without cached prefixes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sdc_runtime.engine import Engine, Generation, SamplingParams
from sdc_runtime.prefix_cache import BLOCK, PrefixCache, block_names

from tests.runtime.test_batching import run, text_of

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime

GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, max_tokens=20, seed=5, ignore_eos=True)
SYSTEM = "문서를 검색해서 한국어로 답변합니다. 제공된 문맥에 답이 없으면 모른다고 말합니다. " * 3


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose output depends on every token and position (a wrong cache changes it)."""
    from sdc_runtime.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("sharp") / "tiny-sharp", weight_scale=8)


@pytest.fixture(scope="module")
def engines(sharp_model_dir: Path) -> tuple[Engine, Engine]:
    cached, plain = Engine(sharp_model_dir, max_batch=8), Engine(sharp_model_dir, max_batch=8, prefix_cache_tokens=0)
    cached.load()
    plain.load()
    return cached, plain


def chat(engine: Engine, system: str, user: str) -> list[int]:
    return engine.chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": user}])


async def answer(engine: Engine, ids: list[int], params: SamplingParams = GREEDY) -> tuple[str, int]:
    generation: Generation = engine.submit(ids, params)
    return await text_of(generation), generation.cached_tokens


def test_block_names_name_the_whole_prefix() -> None:
    a, b = list(range(40)), [*range(16), *range(100, 124)]
    assert block_names(a, 2)[0] == block_names(b, 2)[0], "the same first block"
    assert block_names(a, 2)[1] != block_names(b, 2)[1], "a different second block"
    assert block_names(a[16:], 1)[0] != block_names(a, 2)[1], "a block's name depends on the blocks before it"


def test_lru_keeps_a_prefix_first_blocks_and_the_budget() -> None:
    cache = PrefixCache(3 * BLOCK)
    one, two = list(range(64)), list(range(1000, 1064))
    cache.insert(one, 0, [[None]] * 3)
    assert len(cache.lookup([*one, 9])) == 3
    cache.insert(two, 0, [[None]] * 2)  # evicts one's two last blocks, never its first before its later ones
    assert cache.tokens == 3 * BLOCK
    assert len(cache.lookup([*one, 9])) == 1
    assert len(cache.lookup([*two, 9])) == 2
    assert len(cache.lookup(one[:BLOCK])) == 0, "the last prompt token is always computed"
    assert PrefixCache(0).lookup([*one, 9]) == [] and not PrefixCache(BLOCK - 1).enabled


def test_exact_repeat_and_shared_prefix_match_the_uncached_engine(engines: tuple[Engine, Engine]) -> None:
    cached, plain = engines
    first, other = chat(cached, SYSTEM, "서울은 어디?"), chat(cached, SYSTEM, "Hello, how can I help you today?")

    async def scenario() -> None:
        for params in (GREEDY, SEEDED):
            cached.prefix_cache.clear()
            cold, hit_cold = await answer(cached, first, params)
            repeat, hit_repeat = await answer(cached, first, params)
            shared, hit_shared = await answer(cached, other, params)
            assert hit_cold == 0
            assert hit_repeat == (len(first) - 1) // BLOCK * BLOCK > 3 * BLOCK
            assert 0 < hit_shared < len(other) and hit_shared % BLOCK == 0
            assert cold == repeat == (await answer(plain, first, params))[0]
            assert shared == (await answer(plain, other, params))[0]

    run(scenario())


def test_evicted_prefixes_are_recomputed_and_still_match(sharp_model_dir: Path, engines: tuple[Engine, Engine]) -> None:
    _, plain = engines
    small = Engine(sharp_model_dir, max_batch=4, prefix_cache_tokens=4 * BLOCK)
    small.load()
    a, b = chat(small, SYSTEM, "부산"), chat(small, "Hello there, how can I help you today? " * 8, "서울")

    async def scenario() -> None:
        await answer(small, a)
        assert small.prefix_cache.tokens == 4 * BLOCK, "the budget holds"
        text_b, _ = await answer(small, b)  # fills the cache with b's blocks, evicting a's
        text_a, hit_a = await answer(small, a)
        assert hit_a == 0, "a's blocks were evicted"
        _, hit_b = await answer(small, b)
        assert hit_b == 0, "and then b's, by a's"
        assert text_a == (await answer(plain, a))[0]
        assert text_b == (await answer(plain, b))[0]

    run(scenario())


def test_concurrent_requests_with_and_without_cached_prefixes(engines: tuple[Engine, Engine]) -> None:
    cached, plain = engines
    users = ["서울", "부산은 항구 도시입니다.", "Hello", "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스합니다."]
    prompts = [chat(cached, SYSTEM, u) for u in users] + [chat(cached, "짧은 시스템", u) for u in users[:2]]
    budgets = [20, 35, 8, 27, 14, 30]
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in budgets]

    async def scenario() -> None:
        expected = [(await answer(plain, p, s))[0] for p, s in zip(prompts, params, strict=True)]
        cached.prefix_cache.clear()
        await answer(cached, prompts[0], params[0])  # the system prompt's blocks are cached now
        # Together: cached past of different lengths and uncached rows in one prefill, joining a running row.
        long = asyncio.create_task(answer(cached, prompts[5], SamplingParams(temperature=0, max_tokens=60)))
        outs = await asyncio.gather(*(answer(cached, p, s) for p, s in zip(prompts, params, strict=True)))
        assert [text for text, _ in outs] == expected
        assert outs[1][1] > 0 and outs[3][1] > 0, "the shared system prompt came from the cache"
        assert (await long)[0] == (await answer(plain, prompts[5], SamplingParams(temperature=0, max_tokens=60)))[0]

    run(scenario())


def test_churn_rows_take_ended_rows_slots_and_decode_as_alone(engines: tuple[Engine, Engine]) -> None:
    # Clients sending back to back with mixed budgets: rows end every few steps and newcomers take
    # their slots (their prefill written into the ended row's last columns, the rest masked), while
    # the others keep decoding; every answer must be what that request gets alone.
    cached, plain = engines
    draw = [16, 3, 40, 9, 25, 5, 33, 12, 7, 21, 2, 30]
    requests = [
        (
            chat(cached, f"{i} {SYSTEM[: 20 + 7 * i]}", f"질문 {i}"),
            SamplingParams(temperature=0, max_tokens=n, ignore_eos=True),
        )
        for i, n in enumerate(draw)
    ]

    async def client(mine: list[int]) -> list[str]:
        return [(await answer(cached, *requests[i]))[0] for i in mine]

    async def scenario() -> None:
        expected = [(await answer(plain, ids, params))[0] for ids, params in requests]
        before = cached.reused_slots
        outs = await asyncio.gather(*(client(list(range(k, len(requests), 6))) for k in range(6)))
        for k, texts in enumerate(outs):
            assert texts == [expected[i] for i in range(k, len(requests), 6)]
        assert cached.reused_slots > before, "a newcomer took an ended row's slot"

    run(scenario())


def test_ready_made_prefill_mask_gives_transformers_own_logits(engines: tuple[Engine, Engine]) -> None:
    # A padded prefill hands SDPA its 4D mask ready-made (Transformers would build it per join): the
    # real positions' logits must be exactly those Transformers computes from the 2D mask.
    import torch

    _, plain = engines
    batch = plain.scheduler.batch
    assert batch is not None and batch.sdpa, "the tiny model runs SDPA, the path the ready-made mask is for"
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8, [0] * 7 + [1], [0, 0, 1, 1, 1, 1, 1, 1]])
    ids = torch.randint(3, plain.model.config.vocab_size, mask.shape, generator=torch.Generator().manual_seed(1))
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        ours = plain.model(input_ids=ids, attention_mask=batch._prefill_mask(mask, 0), position_ids=positions).logits
        theirs = plain.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert torch.equal(ours[real], theirs[real])
    assert batch._prefill_mask(torch.ones(2, 5, dtype=torch.long), 0).dim() == 2, "unpadded: plain causal"
