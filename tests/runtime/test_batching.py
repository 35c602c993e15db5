"""Continuous batching on a tiny real model: rows join, leave, stop and sample on their own.

The engine runs in-process (its scheduler thread over the real model); each
test drives it from an asyncio loop the way the HTTP server does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sdc_runtime.engine import Engine, Generation, SamplingParams

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime
T = TypeVar("T")

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    engine = Engine(tiny_model_dir, max_batch=8)
    engine.load()
    return engine


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def prompt(engine: Engine, text: str) -> list[int]:
    return engine.chat_prompt([{"role": "user", "content": text}])


async def text_of(generation: Generation) -> str:
    return "".join([d async for d in generation.deltas()])


async def alone(engine: Engine, ids: list[int], params: SamplingParams) -> str:
    return await text_of(engine.submit(ids, params))


async def until(condition: Any, what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.001)


def test_one_row_matches_transformers_generate(engine: Engine) -> None:
    import torch

    ids = prompt(engine, "쿠버네티스에서 GPU 노드를 사용해")
    ours = run(alone(engine, ids, GREEDY))
    with torch.inference_mode():
        out = engine.model.generate(torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False)
    assert ours == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_a_request_joins_the_running_batch_and_leaves_it_at_once(engine: Engine) -> None:
    long_ids, short_ids = prompt(engine, "서울은 대한민국의 수도입니다."), prompt(engine, "Hi")
    long_params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    short_params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)

    async def scenario() -> tuple[str, str, int, int, int]:
        expected_long = await alone(engine, long_ids, long_params)
        expected_short = await alone(engine, short_ids, short_params)
        long = engine.submit(long_ids, long_params)
        long_text = asyncio.create_task(text_of(long))
        await until(lambda: long.completion_tokens >= 10, "the long row decodes")
        joined_at = long.completion_tokens
        short_text = await text_of(engine.submit(short_ids, short_params))
        left_at = long.completion_tokens
        await until(lambda: engine.running == 1, "the short row left the batch")
        alone_again_at = long.completion_tokens
        assert (await long_text) == expected_long, "the long row is unchanged by a row joining and leaving"
        assert short_text == expected_short, "a joined row decodes exactly as it would alone"
        return expected_long, expected_short, joined_at, left_at, alone_again_at

    _, _, joined_at, left_at, alone_again_at = run(scenario())
    # The short row started and finished while the long one kept decoding (static batching would make it
    # wait for all 200 tokens), and it left the batch within a step or two of finishing.
    assert left_at - joined_at <= 6 + 3
    assert alone_again_at < 200
    assert alone_again_at - left_at <= 2


def test_cancellation_frees_the_row(engine: Engine) -> None:
    ids = prompt(engine, "부산은 항구 도시입니다.")

    async def scenario() -> tuple[Generation, str]:
        victim = engine.submit(ids, SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
        deltas = victim.deltas()
        await anext(deltas)
        await until(lambda: engine.running == 1, "the row runs")
        await deltas.aclose()  # the client went away
        await until(lambda: engine.running == 0, "the cancelled row left the batch")
        after = await alone(engine, ids, GREEDY)
        return victim, after

    victim, after = run(scenario())
    assert victim.finish_reason == "cancelled"
    assert victim.completion_tokens < 400
    assert after, "the engine serves the next request"


def test_stop_strings_are_per_row(engine: Engine) -> None:
    texts = ["서울", "부산 항구", "Hello there"]

    async def scenario() -> None:
        greedy = [await alone(engine, prompt(engine, t), GREEDY) for t in texts]
        stops = [g[4:7] for g in greedy[:2]]
        assert all(len(s) == 3 for s in stops)
        rows = [
            engine.submit(prompt(engine, texts[0]), SamplingParams(temperature=0, max_tokens=24, stop=(stops[0],))),
            engine.submit(
                prompt(engine, texts[1]), SamplingParams(temperature=0, max_tokens=24, stop=(stops[1], "\x00"))
            ),
            engine.submit(prompt(engine, texts[2]), GREEDY),
        ]
        outs = await asyncio.gather(*(text_of(r) for r in rows))
        for i in range(2):
            assert outs[i] == greedy[i][: greedy[i].index(stops[i])]
            assert rows[i].finish_reason == "stop"
        assert outs[2] == greedy[2], "a row without stop strings is not cut by its neighbours'"
        assert rows[2].finish_reason == "length"

    run(scenario())


def test_sampling_settings_are_per_row(engine: Engine) -> None:
    ids = prompt(engine, "문서를 검색해서")
    seeded = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=24, seed=7, ignore_eos=True)
    other_seed = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=24, seed=8, ignore_eos=True)
    nucleus_of_one = SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=24, ignore_eos=True)
    underflow = SamplingParams(temperature=1e-300, max_tokens=24, ignore_eos=True)

    async def scenario() -> None:
        greedy_alone = await alone(engine, ids, GREEDY)
        seeded_alone = await alone(engine, ids, seeded)
        together = await asyncio.gather(
            *(alone(engine, ids, p) for p in (GREEDY, seeded, other_seed, nucleus_of_one, underflow))
        )
        assert together[0] == greedy_alone
        assert together[1] == seeded_alone, "a seed reproduces whatever shares the batch"
        assert together[2] != seeded_alone, "another seed samples differently"
        assert together[3] == greedy_alone, "top_p that keeps one token is greedy"
        assert together[4] == greedy_alone, "a vanishing temperature is greedy, not a NaN"

    run(scenario())


def test_rows_finish_on_their_own_budget_and_on_end_of_sequence(engine: Engine) -> None:
    ids = prompt(engine, "Hello")

    async def scenario() -> list[Generation]:
        rows = [engine.submit(ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)) for n in (1, 5, 17)]
        await asyncio.gather(*(text_of(r) for r in rows))
        return rows

    rows = run(scenario())
    assert [r.completion_tokens for r in rows] == [1, 5, 17]
    assert {r.finish_reason for r in rows} == {"length"}


def test_an_answer_sent_whole_arrives_once_and_equals_the_stream(engine: Engine) -> None:
    ids = prompt(engine, "서울은 대한민국의 수도입니다.")
    # Seeded sampling: varied text (the random model's greedy answer is one character repeated), reproducible.
    seeded = SamplingParams(temperature=1.0, max_tokens=24, seed=3, ignore_eos=True)

    async def scenario() -> None:
        streamed = [d async for d in engine.submit(ids, seeded).deltas()]
        whole = [d async for d in engine.submit(ids, seeded, stream=False).deltas()]
        assert len(streamed) > 1
        assert whole == ["".join(streamed)], "one delta, the same text"
        text = whole[0]
        stop = next(text[k : k + 2] for k in range(1, len(text)) if text.index(text[k : k + 2]) == k)
        with_stop = SamplingParams(temperature=1.0, max_tokens=24, seed=3, ignore_eos=True, stop=(stop,))
        cut = [d async for d in engine.submit(ids, with_stop, stream=False).deltas()]
        assert cut == [text[: text.index(stop)]], "stop strings apply to an answer sent whole"

    run(scenario())


def test_rows_joining_at_different_steps_decode_as_they_would_alone(engine: Engine) -> None:
    # Prompts of different lengths joining a running batch one by one: every step after the first
    # join is left-padded (the ready-made 4D mask), and 150 tokens outgrow the cache's spare columns
    # twice (in-place appends, then a copy with more room), while rows leave at different steps.
    texts = [
        "서울은 대한민국의 수도입니다. 부산은 항구 도시입니다.",
        "Hi",
        "문서를 검색해서 한국어로",
        "Hello there, how can I help you today?",
    ]
    budgets = [150, 40, 120, 90]
    params = [SamplingParams(temperature=1.0, max_tokens=n, seed=i, ignore_eos=True) for i, n in enumerate(budgets)]

    async def scenario() -> None:
        ids = [prompt(engine, t) for t in texts]
        assert len({len(i) for i in ids}) == len(ids), "the rows need padding"
        expected = [await alone(engine, i, p) for i, p in zip(ids, params, strict=True)]
        running: list[asyncio.Task[str]] = []
        for i, p in zip(ids, params, strict=True):
            generation = engine.submit(i, p)
            running.append(asyncio.create_task(text_of(generation)))
            await until(lambda g=generation: g.completion_tokens >= 7, "the new row decodes")
        assert await asyncio.gather(*running) == expected

    run(scenario())


def test_growing_cache_layer_matches_the_plain_one() -> None:
    import torch
    from sdc_runtime.kv_cache import growing_layer_class as _growing_layer_class
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    start = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    plain = DynamicLayer()  # type: ignore[no-untyped-call]
    plain.update(*start)
    growing = _growing_layer_class()(*start)
    rows = 3
    for step in range(150):
        new = torch.randn(rows, 2, 1, 4), torch.randn(rows, 2, 1, 4)
        for a, b in zip(plain.update(*new), growing.update(*new), strict=True):
            assert torch.equal(a, b)
        if step == 70:  # what the batch does to a layer: select rows, trim padding columns, merge
            for layer in (plain, growing):
                layer.batch_select_indices(torch.tensor([0, 2]))
                layer.keys, layer.values = layer.keys[:, :, 3:], layer.values[:, :, 3:]
                layer.keys = torch.cat([layer.keys, torch.zeros_like(layer.keys)])
                layer.values = torch.cat([layer.values, torch.zeros_like(layer.values)])
            rows = 4
        assert plain.keys is not None and growing.keys is not None
        assert torch.equal(plain.keys, growing.keys) and torch.equal(plain.values, growing.values)
        assert growing.get_seq_length() == plain.get_seq_length()
