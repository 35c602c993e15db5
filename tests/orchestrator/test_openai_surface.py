"""The OpenAI surface users' tools expect: /v1/completions, /v1/embeddings, the fields table, token usage."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sdc_orchestrator import openai_fields

from tests.support.fake_openai import FakeBackend

Backends = dict[str, tuple[FakeBackend, str]]
ROOT = Path(__file__).resolve().parents[2]


def tokens(base: str, provider: str, direction: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        if family.name == "sdc_orchestrator_tokens":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {"provider": provider, "direction": direction}:
                    return float(sample.value)
    return 0.0


def publish(path: Path, backends: Backends, entries: list[tuple[str, str]]) -> None:
    """(backend, role) pairs as the operator publishes them."""
    items = [
        {
            "name": f"sdc/{name}-{role}",
            "runtime": "transformers" if role == "embedding" else name,
            "model": backends[name][0].model if role == "chat" else "bge-m3",
            "baseUrl": backends[name][1] + "/v1",
            "role": role,
        }
        for name, role in entries
    ]
    path.write_text(json.dumps({"endpoints": items}))


@pytest.fixture
def local(orchestrator: Callable[..., str], backends: Backends, tmp_path: Path) -> str:
    """A chart-like orchestrator: no seed endpoint, published vLLM (chat) and an embedding model, Gemini keyed."""
    endpoints = tmp_path / "endpoints.json"
    publish(endpoints, backends, [("vllm", "chat"), ("ollama", "embedding")])
    return orchestrator(llm_service_type="none", sdc_endpoints_file=endpoints, llm_fallback="gemini")


def chat(base: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "질문"}], **body}, timeout=10
    )


def test_documented_fields_pass_or_are_ignored_by_the_table(local: str, backends: Backends) -> None:
    resp = chat(
        local,
        store=True,
        metadata={"team": "search"},
        service_tier="auto",
        prompt_cache_key="k",
        reasoning_effort="low",
        chat_template_kwargs={"enable_thinking": False},
        min_tokens=1,
    )
    assert resp.status_code == 200, resp.text
    sent = backends["vllm"][0].last_request or {}
    assert sent["reasoning_effort"] == "low" and sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["min_tokens"] == 1
    assert not {"store", "metadata", "service_tier", "prompt_cache_key"} & set(sent)
    # Gemini's OpenAI endpoint refuses fields it does not know: vLLM's extras never reach it.
    resp = chat(local, model="gemini", reasoning_effort="low", chat_template_kwargs={"enable_thinking": False})
    assert resp.status_code == 200, resp.text
    to_gemini = backends["gemini"][0].last_request or {}
    assert to_gemini["reasoning_effort"] == "low" and "chat_template_kwargs" not in to_gemini


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata: must be an object of at most 16 pairs"),
        ("reasoning_effort", "extreme", "reasoning_effort: must be one of"),
        ("store", "yes", "store: must be true or false"),
        ("chat_template_kwargs", {"a": float("inf")}, None),
        ("guided_choice", [], "guided_choice: must be a list of 1 to 256 strings"),
        ("not_a_field", 1, "unknown parameter(s): not_a_field"),
    ],
)
def test_bad_values_of_those_fields_are_4xx(local: str, field: str, value: object, fragment: str | None) -> None:
    if fragment is None:  # not even JSON: the body itself is refused
        resp = httpx.post(
            f"{local}/v1/chat/completions",
            content='{"messages": [{"role": "user", "content": "q"}], "chat_template_kwargs": {"a": Infinity}}',
            headers={"content-type": "application/json"},
        )
        assert 400 <= resp.status_code < 500, resp.text
        return
    resp = chat(local, **{field: value})
    assert resp.status_code == 400 and fragment in resp.json()["error"]["message"], resp.text


def test_streamed_chats_count_their_tokens_and_cached_ones(local: str, backends: Backends) -> None:
    backends["vllm"][0].cached_tokens = 3
    before = {d: tokens(local, "vllm", d) for d in ("in", "out", "cached")}
    with httpx.stream(
        "POST", f"{local}/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}], "stream": True}
    ) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["choices"] for c in chunks), "no usage chunk for a client that did not ask for one"
    assert (backends["vllm"][0].last_request or {})["stream_options"] == {"include_usage": True}
    # The seed's streamed chat too.
    with httpx.stream("POST", f"{local}/api/v1/chat", json={"message": "q", "stream": True}) as resp:
        assert resp.status_code == 200 and "[DONE]" in resp.read().decode()
    after = {d: tokens(local, "vllm", d) for d in ("in", "out", "cached")}
    assert {d: after[d] - before[d] for d in after} == {"in": 10, "out": 14, "cached": 6}
    # A client that asked for usage gets the usage chunk, cached tokens included.
    with httpx.stream(
        "POST",
        f"{local}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "q"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as resp:
        last = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")][-1]
    assert last["choices"] == [] and last["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    # Not streamed: the backend's usage, cached tokens included, reaches the client and the counter.
    answer = chat(local)
    assert answer.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert tokens(local, "vllm", "cached") - after["cached"] == 6


def test_text_completions_go_to_a_models_own_route(local: str, backends: Backends) -> None:
    resp = httpx.post(f"{local}/v1/completions", json={"prompt": "서울은", "max_tokens": 8, "store": False}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["text"].startswith("vllm 답변")
    [sent] = backends["vllm"][0].completions
    assert sent["prompt"] == "서울은" and sent["model"] == "google/gemma-2-9b-it" and "store" not in sent
    with httpx.stream("POST", f"{local}/v1/completions", json={"prompt": "서울은", "stream": True}, timeout=10) as s:
        events = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[0][6:])["choices"][0]["text"] == "vllm"
    refused = httpx.post(f"{local}/v1/completions", json={"prompt": "q", "model": "gemini"})
    assert refused.status_code == 400 and "no /v1/completions" in refused.text
    for body, fragment in (
        ({}, "prompt: required"),
        ({"prompt": [1, 2]}, "token ids"),
        ({"prompt": "q", "logprobs": 9}, "logprobs"),
    ):
        bad = httpx.post(f"{local}/v1/completions", json=body)
        assert bad.status_code == 400 and fragment in bad.text, bad.text
    assert backends["gemini"][0].calls == 0


def test_text_completions_with_no_model_say_so(orchestrator: Callable[..., str]) -> None:
    empty = orchestrator(llm_service_type="none", gemini_api_key=None)
    resp = httpx.post(f"{empty}/v1/completions", json={"prompt": "q"})
    assert resp.status_code == 503 and "no model yet" in resp.text


def test_embeddings_go_to_an_embedding_model(local: str, backends: Backends) -> None:
    resp = httpx.post(f"{local}/v1/embeddings", json={"input": ["서울", "부산 항구"], "model": "bge-m3"}, timeout=10)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 10
    assert backends["ollama"][0].embedded[-2:] == ["서울", "부산 항구"]
    default = httpx.post(f"{local}/v1/embeddings", json={"input": "서울"}, timeout=10)
    assert default.status_code == 200, default.text
    unknown = httpx.post(f"{local}/v1/embeddings", json={"input": "q", "model": "text-embedding-3-small"})
    assert unknown.status_code == 404 and "embedding models: bge-m3" in unknown.text
    assert httpx.post(f"{local}/v1/embeddings", json={"input": [1, 2]}).status_code == 400


def test_embeddings_without_an_embedding_model_say_how_to_get_one(orchestrator: Callable[..., str]) -> None:
    empty = orchestrator(llm_service_type="none", gemini_api_key=None)
    resp = httpx.post(f"{empty}/v1/embeddings", json={"input": "q"})
    assert resp.status_code == 503 and "spec.routing.role: embedding" in resp.text


def test_readme_publishes_the_fields_table() -> None:
    readme = (ROOT / "README.md").read_text()
    for field, treatment, _ in openai_fields.table():
        assert re.search(rf"\| `{field}` \| {re.escape(treatment)} \|", readme), f"README: the row of {field}"


def test_the_openai_sdk_uses_every_route(local: str, backends: Backends) -> None:
    """The official SDK, as users' tools drive it: chat with the newer fields, a stream with usage,
    text completions and embeddings (the SDK asks for base64 vectors by default)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{local}/v1", api_key="unused", max_retries=0)
    backends["vllm"][0].cached_tokens = 2
    answer = client.chat.completions.create(
        model="google/gemma-2-9b-it",
        messages=[{"role": "user", "content": "질문"}],
        store=True,
        metadata={"app": "search"},
        reasoning_effort="low",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert answer.choices[0].message.content and answer.usage is not None
    assert answer.usage.prompt_tokens_details is not None and answer.usage.prompt_tokens_details.cached_tokens == 2
    chunks = list(
        client.chat.completions.create(
            model="google/gemma-2-9b-it",
            messages=[{"role": "user", "content": "질문"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    text = client.completions.create(model="google/gemma-2-9b-it", prompt="서울은", max_tokens=8)
    assert text.choices[0].text.startswith("vllm")
    vectors = client.embeddings.create(model="bge-m3", input=["서울", "부산"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 10
