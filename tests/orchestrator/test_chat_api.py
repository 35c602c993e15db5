"""The orchestrator over real loopback HTTP: seed API, OpenAI API, routing, fallback, bad input."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fake_openai import FakeBackend
from tests.support.metrics import scrape

Backends = dict[str, tuple[FakeBackend, str]]


def test_seed_curl_example_answers(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕하세요", "provider": "vllm"}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["response"].startswith("vllm 답변")
    assert body["model"] == "google/gemma-2-9b-it"
    assert body["provider"] == "vllm"
    assert body["processing_time"] > 0
    assert float(resp.headers["X-SDC-Overhead-Ms"]) >= 0
    assert backends["vllm"][0].last_request["messages"][-1]["content"] == "안녕하세요"


def test_failing_primary_falls_back_to_gemini(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    fallbacks = {"from_provider": "vllm", "to_provider": "gemini"}
    before = scrape(f"{base}/metrics", "sdc_orchestrator_fallbacks_total", **fallbacks)
    cooldowns = scrape(f"{base}/metrics", "sdc_orchestrator_cooldowns_total")
    for mode in ("fail", "ratelimit"):
        backends["vllm"][0].mode = mode
        body = httpx.post(f"{base}/api/v1/chat", json={"message": "질문", "provider": "vllm"}, timeout=10).json()
        assert body["provider"] == "gemini", mode
        assert body["fallback_used"] is True
    assert scrape(f"{base}/metrics", "sdc_orchestrator_fallbacks_total", **fallbacks) - before == 2
    assert scrape(f"{base}/metrics", "sdc_orchestrator_cooldowns_total") > cooldowns


def test_client_errors_are_returned_not_retried(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    backends["vllm"][0].mode = "bad_request"
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "질문", "provider": "vllm"}, timeout=10)
    assert resp.status_code == 400
    assert "max_tokens" in resp.text
    assert backends["gemini"][0].calls == 0


def test_everything_failing_is_a_clear_502(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    backends["vllm"][0].mode = backends["gemini"][0].mode = "fail"
    failed = {"outcome": "http_502"}
    before = scrape(f"{base}/metrics", "sdc_orchestrator_requests_total", **failed)
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "질문", "provider": "vllm"}, timeout=10)
    assert resp.status_code == 502
    tried = {t["endpoint"] for t in resp.json()["error"]["tried"]}
    assert tried == {"env/vllm", "env/gemini"}
    assert scrape(f"{base}/metrics", "sdc_orchestrator_requests_total", **failed) - before == 1


def test_timeouts_are_a_504(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(sdc_attempt_timeout_s=0.3, llm_fallback="none")
    backends["vllm"][0].mode = "slow"
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "질문", "provider": "vllm"}, timeout=10)
    assert resp.status_code == 504
    assert "timed out" in resp.text


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"),
    [
        ("malformed json", b"{not json", 422, "JSON"),
        ("empty message", {"message": "   "}, 422, "blank"),
        ("oversized message", {"message": "가" * 20000}, 422, "limit"),
        ("unknown provider", {"message": "hi", "provider": "claude"}, 422, "provider"),
        ("unknown model", {"message": "hi", "model": "nope"}, 404, "nope"),
    ],
)
def test_bad_input(orchestrator: Callable[..., str], case: str, body: object, status: int, fragment: str) -> None:
    base = orchestrator()
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    resp = httpx.post(f"{base}/api/v1/chat", timeout=10, headers={"content-type": "application/json"}, **kwargs)
    assert resp.status_code == status, (case, resp.text)
    assert fragment.lower() in resp.text.lower(), (case, resp.text)


def test_openai_sdk_plain_and_streamed(orchestrator: Callable[..., str]) -> None:
    client = openai.OpenAI(base_url=orchestrator() + "/v1", api_key="unused")
    assert "google/gemma-2-9b-it" in [m.id for m in client.models.list()]
    plain = client.chat.completions.create(model="google/gemma-2-9b-it", messages=[{"role": "user", "content": "안녕"}])
    assert plain.choices[0].message.content.startswith("vllm 답변")
    stream = client.chat.completions.create(
        model="google/gemma-2-9b-it", stream=True, messages=[{"role": "user", "content": "안녕"}]
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == plain.choices[0].message.content


def test_stream_dying_midway_ends_with_an_error_event(orchestrator: Callable[..., str], backends: Backends) -> None:
    backends["vllm"][0].mode = "die_midstream"
    client = openai.OpenAI(base_url=orchestrator() + "/v1", api_key="unused", max_retries=0)
    received: list[object] = []
    stream = client.chat.completions.create(
        model="google/gemma-2-9b-it", stream=True, messages=[{"role": "user", "content": "안녕"}]
    )
    with pytest.raises(openai.APIError, match="mid-stream"):
        received.extend(stream)
    assert received, "the first bytes were relayed before the failure"
    assert backends["gemini"][0].calls == 0, "no retry after the first streamed byte"


def test_weights_shift_traffic_and_reload_live(
    orchestrator: Callable[..., str], backends: Backends, tmp_path: Path
) -> None:
    endpoints = tmp_path / "endpoints.json"

    def publish(weights: dict[str, int]) -> None:
        items = [
            {
                "name": f"sdc/{name}",
                "runtime": name,
                "model": "gemma",
                "baseUrl": backends[name][1] + "/v1",
                "weight": weight,
                "role": "chat",
            }
            for name, weight in weights.items()
        ]
        endpoints.write_text(json.dumps({"endpoints": items}))

    publish({"vllm": 90, "ollama": 10})
    base = orchestrator(sdc_endpoints_file=endpoints, llm_fallback="none")
    counts: Counter[str] = Counter()
    for _ in range(200):
        counts[
            httpx.post(
                f"{base}/api/v1/chat", json={"message": "q", "provider": "auto", "model": "gemma"}, timeout=10
            ).json()["provider"]
        ] += 1
    assert 150 <= counts["vllm"] <= 195 and counts["ollama"] >= 5, counts
    publish({"vllm": 0, "ollama": 100})  # the rollback/shift: no restart
    import os

    os.utime(endpoints, (1, 1))
    after = {
        httpx.post(
            f"{base}/api/v1/chat", json={"message": "q", "provider": "auto", "model": "gemma"}, timeout=10
        ).json()["provider"]
        for _ in range(20)
    }
    assert after == {"ollama"}


def test_old_generate_endpoint(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    resp = httpx.post(
        f"{base}/api/v1/generate",
        json={"query": "수도는?", "context": "서울은 수도다", "korean_analysis": {"keywords": ["서울"]}},
        timeout=10,
    )
    body = resp.json()
    assert set(body) == {"response", "model_used", "processing_time", "korean_optimized"}
    assert body["korean_optimized"] is True
    assert "서울은 수도다" in backends["vllm"][0].last_request["messages"][-1]["content"]


def test_openapi_schema_is_published(orchestrator: Callable[..., str]) -> None:
    paths = httpx.get(orchestrator() + "/openapi.json").json()["paths"]
    assert {"/api/v1/chat", "/api/v1/documents", "/v1/chat/completions", "/v1/models"} <= set(paths)


def test_client_disconnect_cancels_the_upstream_request(orchestrator: Callable[..., str], backends: Backends) -> None:
    import time

    base = orchestrator(sdc_attempt_timeout_s=10, sdc_total_timeout_s=20)
    backends["vllm"][0].mode = "slow"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/api/v1/chat", json={"message": "질문", "provider": "vllm"}, timeout=0.5)
    deadline = time.monotonic() + 5
    while backends["vllm"][0].disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends["vllm"][0].disconnects == 1
    assert backends["gemini"][0].calls == 0, "a cancelled request is not failed over"


def _publish(path: Path, backends: Backends, names: list[str]) -> None:
    items = [
        {"name": f"sdc/{n}", "runtime": n, "model": "gemma2:9b", "baseUrl": backends[n][1] + "/v1", "weight": 100}
        for n in names
    ]
    path.write_text(json.dumps({"endpoints": items}))


def test_service_type_none_routes_only_to_published_endpoints(
    orchestrator: Callable[..., str], backends: Backends, tmp_path: Path
) -> None:
    """The chart's default: no seed endpoint is invented; a chat without a provider reaches the published Ollama."""
    endpoints = tmp_path / "endpoints.json"
    _publish(endpoints, backends, ["ollama"])
    base = orchestrator(llm_service_type="none", sdc_endpoints_file=endpoints, gemini_api_key=None)
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕하세요"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["provider"] == "ollama"
    assert backends["vllm"][0].calls == 0  # VLLM_HOST/PORT are set by the fixture, yet unused
    completion = httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "q"}]},
        timeout=10,
    )
    assert completion.status_code == 200, completion.text
    assert httpx.get(f"{base}/readyz").json()["endpoints"] == ["sdc/ollama"]


def test_service_type_none_with_gemini_falls_back_and_without_anything_says_so(
    orchestrator: Callable[..., str], backends: Backends, tmp_path: Path
) -> None:
    endpoints = tmp_path / "endpoints.json"
    _publish(endpoints, backends, ["ollama"])
    backends["ollama"][0].mode = "fail"
    base = orchestrator(llm_service_type="none", sdc_endpoints_file=endpoints)
    body = httpx.post(f"{base}/api/v1/chat", json={"message": "질문"}, timeout=10).json()
    assert body["provider"] == "gemini" and body["fallback_used"] is True
    empty = orchestrator(llm_service_type="none", gemini_api_key=None)
    resp = httpx.post(f"{empty}/api/v1/chat", json={"message": "질문"}, timeout=10)
    assert resp.status_code == 503, resp.text


def test_ready_with_no_model_and_says_so(orchestrator: Callable[..., str], backends: Backends, tmp_path: Path) -> None:
    """Ready whenever it serves (Kubernetes' convention, so `helm install --wait` completes before any model);
    "no model yet" is in /readyz's body, /api/v1/status, the gauge and a 503 on chat that says what to do."""
    nothing = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_namespace="team-a")
    ready = httpx.get(f"{nothing}/readyz")
    assert ready.status_code == 200 and ready.json()["chat"] == "no model yet", ready.text
    status = httpx.get(f"{nothing}/api/v1/status").json()
    assert status["chat"] == "no model yet" and status["models"] == [] and status["namespaces"] == ["team-a"]
    chat = httpx.post(f"{nothing}/api/v1/chat", json={"message": "질문"}, timeout=10)
    assert chat.status_code == 503, chat.text
    message = chat.json()["error"]["message"]
    assert message.startswith("no model yet") and "kubectl apply -n team-a" in message
    openai = httpx.post(f"{nothing}/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]})
    assert openai.status_code == 503 and "no model yet" in openai.text
    scrape = httpx.get(f"{nothing}/metrics").text
    assert 'sdc_orchestrator_chat_endpoints{state="ready"} 0.0' in scrape

    endpoints = tmp_path / "endpoints.json"
    _publish(endpoints, backends, ["ollama"])
    base = orchestrator(llm_service_type="none", sdc_endpoints_file=endpoints, gemini_api_key=None, sdc_cooldown_s=30.0)
    assert httpx.get(f"{base}/readyz").json() | {"message": ""} == {
        "status": "ok",
        "chat": "ready",
        "message": "",
        "endpoints": ["sdc/ollama"],
        "cooling": [],
    }
    assert 'sdc_orchestrator_chat_endpoints{state="ready"} 1.0' in httpx.get(f"{base}/metrics").text
    backends["ollama"][0].mode = "fail"
    assert httpx.post(f"{base}/api/v1/chat", json={"message": "q"}, timeout=10).status_code == 502
    # Still Ready: the Service keeps the pod, and a chat gets a 502 naming the backend rather than no answer.
    cooling = httpx.get(f"{base}/readyz")
    assert cooling.status_code == 200 and cooling.json()["chat"] == "cooling"
    assert cooling.json()["cooling"] == ["sdc/ollama"]
    assert httpx.get(f"{base}/api/v1/status").json()["models"][0] == {
        "name": "sdc/ollama",
        "provider": "ollama",
        "model": "gemma2:9b",
        "namespace": "sdc",
        "weight": 100,
        "cooling": True,
    }
