"""The Ollama exporter's counting, alone: what is running and waiting, the tokens, the estimated cache hits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sdc_orchestrator.routing.scrape import parse
from sdc_runtime.ollama_counts import Tracker, common_prefix, model_key


def body(content: str, model: str = "tiny", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}], **extra}).encode()


def test_the_oldest_parallel_requests_run_and_the_rest_wait() -> None:
    tracker = Tracker(parallel=2, context=1000)
    flights = [tracker.start("/api/chat", body(f"q{i}")) for i in range(5)]
    assert all(f is not None for f in flights)
    snap = tracker.snapshot()["tiny:latest"]
    assert (snap["running"], snap["waiting"]) == (2, 3)
    tracker.finish(flights[0])
    snap = tracker.snapshot()["tiny:latest"]
    assert (snap["running"], snap["waiting"]) == (2, 2)
    for flight in flights[1:]:
        tracker.finish(flight)
    snap = tracker.snapshot()["tiny:latest"]
    assert (snap["running"], snap["waiting"], snap["finished"]) == (0, 0, 5)


def test_models_are_counted_apart_and_named_as_ollama_names_them() -> None:
    tracker = Tracker(parallel=1)
    tracker.start("/v1/chat/completions", body("a", model="tiny"))
    tracker.start("/api/generate", json.dumps({"model": "team/big:7b", "prompt": "x"}).encode())
    tracker.start("/api/generate", json.dumps({"model": "team/big:7b", "prompt": "y"}).encode())
    snap = tracker.snapshot()
    assert set(snap) == {"tiny:latest", "team/big:7b"}
    assert (snap["team/big:7b"]["running"], snap["team/big:7b"]["waiting"]) == (1, 1)
    assert model_key("registry.local:5000/team/big") == "registry.local:5000/team/big:latest"


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/tags", b""),
        ("/api/show", b'{"model": "tiny"}'),
        ("/api/chat", b"{not json"),
        ("/api/chat", b'["a list"]'),
        ("/api/chat", b'{"model": 5}'),
        ("/api/chat", b'{"model": ""}'),
        ("/api/chat", b"\xff\xfe"),
    ],
)
def test_what_runs_no_model_is_not_counted(path: str, raw: bytes) -> None:
    tracker = Tracker()
    assert tracker.start(path, raw) is None
    assert tracker.snapshot() == {}


def test_tokens_come_from_the_responses_in_both_shapes() -> None:
    tracker = Tracker()
    native = tracker.start("/api/chat", body("hello"))
    assert native is not None
    for piece in ({"message": {"content": "a"}}, {"message": {"content": "b"}}):
        tracker.observe(native, piece)
    assert native.output_tokens == 2  # streamed pieces, one token each, until the final count says
    tracker.observe(native, {"message": {"content": ""}, "done": True, "prompt_eval_count": 12, "eval_count": 3})
    tracker.finish(native)
    openai = tracker.start("/v1/chat/completions", body("hello"))
    assert openai is not None
    tracker.observe(
        openai, {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
    )
    tracker.finish(openai)
    snap = tracker.snapshot()["tiny:latest"]
    assert (snap["prompt_tokens"], snap["generation_tokens"], snap["prefix_queries"]) == (19, 5, 19)


def test_a_repeated_prompt_is_estimated_a_hit_and_a_new_one_a_miss() -> None:
    tracker = Tracker(parallel=1)
    doc = "문서 " * 200

    def ask(question: str, tokens: int) -> None:
        flight = tracker.start("/api/chat", body(doc + question))
        assert flight is not None
        tracker.observe(
            flight, {"done": True, "prompt_eval_count": tokens, "eval_count": 1, "message": {"content": "x"}}
        )
        tracker.finish(flight)

    ask("첫 질문", 400)
    first = tracker.snapshot()["tiny:latest"]
    assert first["prefix_hits"] == 0  # an empty cache
    ask("둘째 질문", 401)
    second = tracker.snapshot()["tiny:latest"]
    hit = (second["prefix_hits"] - first["prefix_hits"]) / 401
    assert 0.95 < hit < 1.0  # the document and the question's first word: all but the tail
    other = tracker.start("/api/chat", body("전혀 다른 대화"))
    assert other is not None
    tracker.finish(other)
    third = tracker.snapshot()["tiny:latest"]
    assert third["prefix_hits"] - second["prefix_hits"] < 5  # the role marker alone, as the runner's template


def test_concurrent_conversations_take_their_own_sequences() -> None:
    """Two requests in flight hold two slots; their next turns, in flight together again, find their own."""
    tracker = Tracker(parallel=2)
    for turn in ("", "더"):
        flights = [tracker.start("/api/chat", body(c * 300 + turn)) for c in ("가", "나")]
        for flight in flights:
            assert flight is not None
            tracker.observe(flight, {"done": True, "prompt_eval_count": 300, "eval_count": 1})
        for flight in flights:
            tracker.finish(flight)
    snap = tracker.snapshot()["tiny:latest"]
    assert snap["prefix_hits"] / snap["prefix_queries"] > 0.45  # the second turns: all but their last word


def test_kv_use_is_the_running_requests_tokens_over_the_cache() -> None:
    tracker = Tracker(parallel=2, context=100)
    first = tracker.start("/api/generate", json.dumps({"model": "m", "prompt": "x" * 40}).encode())
    assert first is not None
    tracker.observe(first, {"response": "a"})
    assert tracker.snapshot()["m:latest"]["kv_usage"] == pytest.approx((40 * 0.5 + 1) / 200)
    for _ in range(4):
        tracker.start("/api/generate", json.dumps({"model": "m", "prompt": "y" * 1000}).encode())
    assert tracker.snapshot()["m:latest"]["kv_usage"] == 1.0  # capped


def test_the_page_is_what_the_orchestrator_reads() -> None:
    tracker = Tracker(parallel=1)
    tracker.start("/api/chat", body("a", model='we"ird\\name'))
    tracker.start("/api/chat", body("b", model='we"ird\\name'))
    page = tracker.render()
    assert "# TYPE vllm:prefix_cache_hits counter" in page and "vllm:prefix_cache_hits_total{" in page
    reading = parse(page, 0.0)
    assert (reading.running, reading.waiting) == (1, 1)


def test_common_prefix() -> None:
    assert common_prefix("", "abc") == 0
    assert common_prefix("abc", "abc") == 3
    assert common_prefix("abcd", "abxd") == 2
    assert common_prefix("가나다" * 1000, "가나다" * 1000 + "라") == 3000
