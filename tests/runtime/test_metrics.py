"""vLLM's metric names and cached-token usage on a real sdc-runtime process over a tiny model.

The server runs with one row (`SDC_RUNTIME_MAX_BATCH=1`) so a second request must wait while a long
one decodes; the gauges and counters are read from `/metrics` as Prometheus would read them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import runtime_process

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime

NAME = "tiny-metrics"
SYSTEM = "문서를 검색해서 한국어로 답변합니다. 제공된 문맥에 답이 없으면 모른다고 말합니다. " * 2


@pytest.fixture(scope="module")
def runtime(tiny_model_dir: Path) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SDC_RUNTIME_MAX_BATCH", "1")
        with runtime_process(tiny_model_dir, NAME) as base:
            yield base


def samples(base: str) -> dict[str, float]:
    """One scrape of /metrics: every series with this server's `model_name` label, by name."""
    text = httpx.get(f"{base}/metrics").text
    return {
        s.name: float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model_name") == NAME
    }


def sample(base: str, name: str) -> float:
    found = samples(base)
    assert name in found, f"{name} with model_name={NAME} is not on /metrics"
    return found[name]


def body(user: str, max_tokens: int, stream: bool = False, system: str = SYSTEM) -> dict[str, object]:
    return {
        "model": NAME,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def test_waiting_running_and_kv_usage_move_with_the_batch(runtime: str) -> None:
    assert sample(runtime, "vllm:num_requests_waiting") == 0
    assert sample(runtime, "vllm:num_requests_running") == 0
    assert sample(runtime, "vllm:kv_cache_usage_perc") == 0
    streaming, stop = threading.Event(), threading.Event()

    def long() -> None:
        with httpx.stream("POST", f"{runtime}/v1/chat/completions", json=body("서울", 400, stream=True)) as resp:
            for line in resp.iter_lines():
                if '"content":' in line:
                    streaming.set()
                if stop.is_set():
                    return  # closing the stream cancels the row

    def short() -> None:
        httpx.post(f"{runtime}/v1/chat/completions", json=body("부산", 4), timeout=60).raise_for_status()

    threads = [threading.Thread(target=long)]
    threads[0].start()
    try:
        assert streaming.wait(30)
        deadline = time.monotonic() + 30
        while not sample(runtime, "vllm:num_requests_running") and time.monotonic() < deadline:
            time.sleep(0.001)
        threads.append(threading.Thread(target=short))
        threads[1].start()
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while not seen.get("vllm:num_requests_waiting") and time.monotonic() < deadline:
            seen = samples(runtime)
        assert seen["vllm:num_requests_waiting"] == 1, "the second request waits while the only row decodes"
        assert seen["vllm:num_requests_running"] == 1
        assert 0 < seen["vllm:kv_cache_usage_perc"] <= 1
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    deadline = time.monotonic() + 30
    while sample(runtime, "vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sample(runtime, "vllm:num_requests_waiting") == 0
    assert sample(runtime, "vllm:kv_cache_usage_perc") == 0


def test_a_repeated_prompt_is_served_from_the_prefix_cache(runtime: str) -> None:
    queries, hits = sample(runtime, "vllm:prefix_cache_queries_total"), sample(runtime, "vllm:prefix_cache_hits_total")
    request = body("Hello there", 8, system="Hello, how can I help you today? The answer is in the context. " * 3)
    first = httpx.post(f"{runtime}/v1/chat/completions", json=request, timeout=60).json()
    second = httpx.post(f"{runtime}/v1/chat/completions", json=request, timeout=60).json()
    prompt = first["usage"]["prompt_tokens"]
    assert prompt > 32
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (prompt - 1) // 16 * 16, "every full block but the one holding the last prompt token"
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    with httpx.stream("POST", f"{runtime}/v1/chat/completions", json={**request, "stream": True}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": cached}, "the final usage chunk"
    assert sample(runtime, "vllm:prefix_cache_queries_total") == queries + 3 * prompt
    assert sample(runtime, "vllm:prefix_cache_hits_total") == hits + 2 * cached
    assert sample(runtime, "vllm:prompt_tokens_total") >= 3 * prompt
    assert sample(runtime, "vllm:generation_tokens_total") >= 3 * 8
