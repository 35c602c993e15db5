"""sdc-runtime serving a tiny model made on the spot, driven by the official openai client."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.metrics import scrape
from tests.support.servers import runtime_process

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdc_runtime.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-chat")


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[str]:
    with runtime_process(tiny_model, "tiny") as base:
        yield base


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def test_plain_and_streamed_chat(runtime: str) -> None:
    c = client(runtime)
    assert [m.id for m in c.models.list()] == ["tiny"]
    msgs = [{"role": "user", "content": "안녕하세요"}]
    plain = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
    assert plain.usage is not None and plain.usage.completion_tokens <= 12
    assert plain.usage.prompt_tokens > 0
    streamed = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0, stream=True)
    chunks = list(streamed)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content, "greedy decoding is the same streamed or not"


def test_concurrent_requests_do_not_interleave(runtime: str) -> None:
    c = client(runtime)
    prompts = ["서울", "부산 항구", "Hello there", "쿠버네티스 GPU"]
    alone = {
        p: c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": p}], max_tokens=10, temperature=0
        )
        .choices[0]
        .message.content
        for p in prompts
    }
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = {
            pool.submit(
                lambda p=p: (
                    c.chat.completions.create(  # type: ignore[misc]
                        model="tiny", messages=[{"role": "user", "content": p}], max_tokens=10, temperature=0
                    )
                    .choices[0]
                    .message.content
                )
            ): p
            for p in prompts * 2
        }
        together = {(futures[f], f.result()) for f in concurrent.futures.as_completed(futures)}
    assert together == set(alone.items())


def test_seed_and_stop_are_honoured(runtime: str) -> None:
    c = client(runtime)
    runs = {
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=8, temperature=1.0, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(runs) == 1
    # A stop string cuts the output where it first appears (greedy decoding makes that position known).
    greedy = (
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=12, temperature=0
        )
        .choices[0]
        .message.content
        or ""
    )
    assert len(greedy) >= 3
    stop = greedy[1:3]
    stopped = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=12, temperature=0, stop=[stop]
    ).choices[0]
    assert stopped.message.content == greedy[: greedy.index(stop)]
    assert stopped.finish_reason == "stop"


def test_embeddings(runtime: str) -> None:
    c = client(runtime)
    batch = c.embeddings.create(model="tiny", input=["서울", "부산은 대한민국의 항구 도시입니다", "서울"])
    vectors = [d.embedding for d in batch.data]
    assert [d.index for d in batch.data] == [0, 1, 2] and all(len(v) == 64 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vectors), "unit length"
    assert max(abs(a - b) for a, b in zip(vectors[0], vectors[1], strict=True)) > 1e-3, "different texts differ"
    # A text's vector does not depend on what it was batched with (padding is masked out of the mean).
    alone = c.embeddings.create(model="tiny", input="서울").data[0].embedding
    assert max(abs(a - b) for a, b in zip(alone, vectors[0], strict=True)) < 1e-4
    assert batch.usage.prompt_tokens > 0


def test_bad_requests(runtime: str) -> None:
    c = client(runtime)
    with pytest.raises(openai.NotFoundError, match="not served"):
        c.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="context limit of 512"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "가 " * 600}], max_tokens=8)


def test_missing_model_dir_is_a_clear_startup_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sdc_runtime", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "does not exist" in out.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{oops")
    out = subprocess.run(
        [sys.executable, "-m", "sdc_runtime", "--model", str(tmp_path / "broken")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "not valid JSON" in out.stderr


def test_orchestrator_answers_through_the_runtime(runtime: str, tmp_path: Path) -> None:
    """The seed's curl example with LLM_SERVICE_TYPE=vllm pointing at a real model server."""
    from sdc_orchestrator.app import create_app
    from sdc_orchestrator.settings import OrchestratorSettings

    from tests.support.servers import serve

    port = int(runtime.rsplit(":", 1)[1])
    settings = OrchestratorSettings(
        llm_service_type="vllm", vllm_host="127.0.0.1", vllm_port=port, sdc_data_dir=tmp_path
    )
    before = scrape(f"{runtime}/metrics", "vllm:generation_tokens_total")
    with serve(create_app(settings)) as base:
        body = httpx.post(
            f"{base}/api/v1/chat", json={"message": "안녕하세요", "provider": "vllm", "max_tokens": 8}, timeout=60
        ).json()
    assert body["model"] == "tiny" and body["provider"] == "vllm" and body["fallback_used"] is False
    assert isinstance(body["response"], str) and body["response"], "the model's words reach the client"
    generated = scrape(f"{runtime}/metrics", "vllm:generation_tokens_total") - before
    assert 1 <= generated <= 8, f"the runtime generated {generated} tokens for max_tokens 8"
