"""The migration guide's behaviour over real loopback HTTP: sampling defaults, model_used, the
auto split, sticky users, feedback and shadow traffic."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.fake_openai import FakeBackend

Backends = dict[str, tuple[FakeBackend, str]]
GUIDE = {"temperature": 0.3, "top_p": 0.8, "max_tokens": 2048}


def sample(base: str, family: str, **labels: str) -> float:
    """A metric's current value by family and labels (0 when absent): tests compare values, not text."""
    for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in fam.samples:
            if s.name == family and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def sampling_of(request: dict[str, object] | None) -> dict[str, object]:
    assert request is not None
    return {k: request.get(k) for k in GUIDE}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- 1. the guide's defaults ------------------------------------------------------------------
def test_guide_sampling_reaches_the_backend_on_every_route(
    orchestrator: Callable[..., str], backends: Backends
) -> None:
    base = orchestrator()
    vllm = backends["vllm"][0]
    httpx.post(f"{base}/api/v1/chat", json={"message": "안녕하세요"}, timeout=10).raise_for_status()
    assert sampling_of(vllm.last_request) == GUIDE
    httpx.post(f"{base}/api/v1/generate", json={"query": "수도는?"}, timeout=10).raise_for_status()
    assert sampling_of(vllm.last_request) == GUIDE
    httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": "vllm", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    ).raise_for_status()
    assert sampling_of(vllm.last_request) == GUIDE


def test_callers_sampling_wins_and_chat_accepts_top_p(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    vllm = backends["vllm"][0]
    mine = {"temperature": 0.9, "top_p": 0.5, "max_tokens": 17}
    httpx.post(f"{base}/api/v1/chat", json={"message": "안녕", **mine}, timeout=10).raise_for_status()
    assert sampling_of(vllm.last_request) == mine
    # OpenAI's newer token limit is not doubled up with max_tokens
    httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": "vllm", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9},
        timeout=10,
    ).raise_for_status()
    assert vllm.last_request is not None
    assert "max_tokens" not in vllm.last_request and vllm.last_request["max_completion_tokens"] == 9
    bad = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕", "top_p": 1.5}, timeout=10)
    assert bad.status_code == 422 and "top_p" in bad.text


def test_sampling_defaults_come_from_the_environment(
    orchestrator: Callable[..., str], backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_TEMPERATURE", "0.7")
    monkeypatch.setenv("LLM_TOP_P", "0.95")
    monkeypatch.setenv("LLM_MAX_TOKENS", "512")
    from_env = OrchestratorSettings()
    base = orchestrator(
        llm_temperature=from_env.llm_temperature, llm_top_p=from_env.llm_top_p, llm_max_tokens=from_env.llm_max_tokens
    )
    httpx.post(f"{base}/api/v1/chat", json={"message": "안녕"}, timeout=10).raise_for_status()
    assert sampling_of(backends["vllm"][0].last_request) == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512}


def test_generate_answers_model_used_as_service_type_and_model(orchestrator: Callable[..., str]) -> None:
    body = httpx.post(f"{orchestrator()}/api/v1/generate", json={"query": "수도는?"}, timeout=10).json()
    assert body["model_used"] == "vllm:google/gemma-2-9b-it"


def test_a_backend_that_does_not_name_its_model_gets_the_guides_name(
    orchestrator: Callable[..., str], backends: Backends
) -> None:
    vllm = backends["vllm"][0]
    vllm.list_models = False
    body = httpx.post(f"{orchestrator()}/api/v1/generate", json={"query": "수도는?"}, timeout=10).json()
    assert vllm.last_request is not None and vllm.last_request["model"] == "gemma-2-9b-it"
    assert body["model_used"].startswith("vllm:")


# -- 2. migration routing -------------------------------------------------------------------------
def test_service_type_auto_is_accepted_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVICE_TYPE", "auto")
    monkeypatch.setenv("VLLM_HOST", "10.0.0.7")
    settings = OrchestratorSettings()
    assert settings.llm_service_type == "auto"
    assert settings.local_service_configured("vllm") and not settings.local_service_configured("ollama")


def test_auto_splits_generate_by_gemini_weight(orchestrator: Callable[..., str], backends: Backends) -> None:
    """LLM_SERVICE_TYPE=auto: the seed's local service (weight 100) against GEMINI_WEIGHT=300."""
    base = orchestrator(llm_service_type="auto", gemini_weight=300, llm_fallback="none")
    counts: Counter[str] = Counter()
    for i in range(200):
        body = httpx.post(
            f"{base}/api/v1/generate", json={"query": "수도는?"}, headers={"X-SDC-User": f"u{i}"}, timeout=10
        ).json()
        counts[body["model_used"].split(":", 1)[0]] += 1
    assert set(counts) == {"vllm", "gemini"}
    assert 25 <= counts["vllm"] <= 80, counts  # expected 50 of 200


def test_a_user_stays_on_one_model(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(llm_service_type="auto", gemini_weight=100, llm_fallback="none")
    seen: dict[str, set[str]] = {}
    for round_ in range(4):
        for i in range(30):
            if round_ % 2 == 0:  # the header on the seed's chat ...
                provider = httpx.post(
                    f"{base}/api/v1/chat", json={"message": "질문"}, headers={"X-SDC-User": f"user-{i}"}, timeout=10
                ).json()["provider"]
            else:  # ... and the OpenAI `user` field name the same user
                data = httpx.post(
                    f"{base}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "질문"}], "user": f"user-{i}"},
                    timeout=10,
                ).json()
                provider = "gemini" if data["model"] == "gemini-x" else "vllm"
            seen.setdefault(f"user-{i}", set()).add(provider)
    assert all(len(p) == 1 for p in seen.values()), seen
    assert {next(iter(p)) for p in seen.values()} == {"vllm", "gemini"}, "users are spread over both"


def test_provider_auto_is_accepted_on_every_route(orchestrator: Callable[..., str]) -> None:
    base = orchestrator()
    assert httpx.post(f"{base}/api/v1/chat", json={"message": "q", "provider": "auto"}, timeout=10).status_code == 200
    resp = httpx.post(f"{base}/api/v1/generate", json={"query": "q", "provider": "auto"}, timeout=10)
    assert resp.status_code == 200, resp.text
    resp = httpx.post(f"{base}/api/v1/generate", json={"query": "q", "provider": "claude"}, timeout=10)
    assert resp.status_code == 422 and "provider" in resp.text


# -- 3. feedback -------------------------------------------------------------------------------------
def test_feedback_is_stored_with_who_answered_and_counted(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    base = orchestrator()
    answer = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕"}, timeout=10)
    response_id = answer.json()["response_id"]
    assert response_id and answer.headers["X-SDC-Response-Id"] == response_id
    labels = {"provider": "vllm", "model": "google/gemma-2-9b-it", "rating": "up"}
    before = sample(base, "sdc_orchestrator_feedback_total", **labels)
    resp = httpx.post(
        f"{base}/api/v1/feedback", json={"response_id": response_id, "rating": 1, "comment": "좋아요"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["provider"] == "vllm"
    assert sample(base, "sdc_orchestrator_feedback_total", **labels) == before + 1
    stored = [json.loads(line) for line in (tmp_path / "data" / "feedback.jsonl").read_text().splitlines()]
    assert stored[-1]["response_id"] == response_id and stored[-1]["comment"] == "좋아요"
    assert stored[-1]["model"] == "google/gemma-2-9b-it" and stored[-1]["rating"] == 1
    again = httpx.post(f"{base}/api/v1/feedback", json={"response_id": response_id, "rating": -1}, timeout=10)
    assert again.status_code == 409


def test_openai_answers_carry_a_response_id_too(orchestrator: Callable[..., str]) -> None:
    base = orchestrator()
    data = httpx.post(
        f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10
    ).json()
    ok = httpx.post(f"{base}/api/v1/feedback", json={"response_id": data["response_id"], "rating": -1}, timeout=10)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"),
    [
        ("unknown id", {"response_id": "resp-nope", "rating": 1}, 404, "resp-nope"),
        ("rating 2", {"response_id": "resp-x", "rating": 2}, 422, "rating"),
        ("rating 0", {"response_id": "resp-x", "rating": 0}, 422, "rating"),
        ("no id", {"rating": 1}, 422, "response_id"),
        ("huge comment", {"response_id": "resp-x", "rating": 1, "comment": "가" * 3000}, 422, "comment"),
        ("unknown field", {"response_id": "resp-x", "rating": 1, "stars": 5}, 422, "stars"),
    ],
)
def test_bad_feedback_is_a_clear_4xx(
    orchestrator: Callable[..., str], case: str, body: dict[str, object], status: int, fragment: str
) -> None:
    resp = httpx.post(f"{orchestrator()}/api/v1/feedback", json=body, timeout=10)
    assert resp.status_code == status, (case, resp.text)
    assert fragment in resp.text, (case, resp.text)


def test_feedback_memory_is_bounded(orchestrator: Callable[..., str]) -> None:
    base = orchestrator(sdc_feedback_max_responses=2)
    ids = [httpx.post(f"{base}/api/v1/chat", json={"message": "q"}, timeout=10).json()["response_id"] for _ in range(3)]
    assert httpx.post(f"{base}/api/v1/feedback", json={"response_id": ids[0], "rating": 1}).status_code == 404
    assert httpx.post(f"{base}/api/v1/feedback", json={"response_id": ids[2], "rating": 1}).status_code == 200


# -- 4. shadow traffic -------------------------------------------------------------------------------
def test_shadow_copies_each_chat_and_reports_pairs(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(sdc_shadow_provider="gemini")
    vllm, gemini = backends["vllm"][0], backends["gemini"][0]
    before = sample(base, "sdc_orchestrator_shadow_calls_total", outcome="compared")
    for _ in range(3):
        body = httpx.post(f"{base}/api/v1/chat", json={"message": "대한민국의 수도는?"}, timeout=10).json()
        assert body["provider"] == "vllm" and body["response"] == vllm.answer  # the user's answer is unchanged
    wait_for(lambda: httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()["pairs"] == 3)
    report = httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()
    assert gemini.calls == 3
    assert gemini.last_request is not None and vllm.last_request is not None
    assert gemini.last_request["messages"] == vllm.last_request["messages"], "the same prompt"
    assert report["primary"]["providers"] == {"vllm:google/gemma-2-9b-it": 3}
    assert report["shadow"]["providers"] == {"gemini:gemini-x": 3}
    assert report["shadow"]["completion_tokens"]["mean"] == 7
    assert report["primary"]["latency_s"]["mean"] > 0 and report["shadow"]["latency_s"]["mean"] > 0
    # "vllm 답변: 서울은 ..." against "gemini 답변: 서울은 ...": the same words but one
    assert 0.7 < report["similarity"]["mean"] < 1.0
    assert sample(base, "sdc_orchestrator_shadow_calls_total", outcome="compared") == before + 3
    assert sample(base, "sdc_orchestrator_shadow_pairs") == 3
    assert sample(base, "sdc_orchestrator_shadow_similarity") == report["similarity"]["mean"]


def test_a_slow_shadow_neither_delays_nor_piles_up(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(sdc_shadow_provider="gemini", sdc_shadow_concurrency=1, sdc_shadow_timeout_s=1.0)
    backends["gemini"][0].mode = "slow"  # answers after 5 s, far past the shadow's own timeout
    first = httpx.post(f"{base}/api/v1/chat", json={"message": "질문"}, timeout=10)
    assert first.status_code == 200
    report = httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()
    assert report["in_flight"] == 1, "the answer came back while its shadow copy still runs"
    httpx.post(f"{base}/api/v1/chat", json={"message": "질문"}, timeout=10).raise_for_status()
    wait_for(lambda: httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()["outcomes"].get("timeout") == 1)
    outcomes = httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()["outcomes"]
    assert outcomes == {"dropped": 1, "timeout": 1}
    assert backends["vllm"][0].calls == 2


def test_shadow_is_off_by_default(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    httpx.post(f"{base}/api/v1/chat", json={"message": "질문"}, timeout=10).raise_for_status()
    report = httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()
    assert report["enabled"] is False and report["pairs"] == 0
    assert backends["gemini"][0].calls == 0


def test_streamed_chat_carries_a_response_id_and_is_not_shadowed(orchestrator: Callable[..., str]) -> None:
    base = orchestrator(sdc_shadow_provider="gemini")
    with httpx.stream("POST", f"{base}/api/v1/chat", json={"message": "안녕", "stream": True}, timeout=10) as resp:
        lines = list(resp.iter_lines())
        header = resp.headers["X-SDC-Response-Id"]
    first = next(line for line in lines if line.startswith("data: "))
    meta = json.loads(first.removeprefix("data: "))
    assert meta["response_id"] == header
    rated = httpx.post(f"{base}/api/v1/feedback", json={"response_id": header, "rating": 1}, timeout=10)
    assert rated.json()["model"] == "google/gemma-2-9b-it"
    assert httpx.get(f"{base}/api/v1/shadow/report", timeout=30).json()["outcomes"] == {"skipped": 1}


def test_the_shadow_report_is_split_by_tenant(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    """A key sees its own tenant's comparisons only; an admin key sees every tenant's, or one with ?tenant=."""
    keys = tmp_path / "tenant-keys"
    keys.write_text("alice@acme:acme-secret\nbob@globex:globex-secret\nops:ops-secret\n")
    base = orchestrator(sdc_shadow_provider="gemini", sdc_api_keys_file=keys, sdc_admin_key_names="ops")
    acme, globex, ops = ({"Authorization": f"Bearer {k}-secret"} for k in ("acme", "globex", "ops"))

    def report(headers: dict[str, str], query: str = "") -> httpx.Response:
        return httpx.get(f"{base}/api/v1/shadow/report{query}", headers=headers, timeout=30)

    for headers, times in ((acme, 2), (globex, 1)):
        for _ in range(times):
            chat = {"message": "대한민국의 수도는?", "use_rag": False}
            assert httpx.post(f"{base}/api/v1/chat", json=chat, headers=headers, timeout=10).status_code == 200
    wait_for(lambda: report(ops).json()["pairs"] == 3)
    assert report(acme).json()["pairs"] == 2 and report(acme).json()["tenant"] == "acme"
    assert report(acme).json()["outcomes"] == {"compared": 2}
    assert report(globex).json()["pairs"] == 1 and report(globex).json()["tenants"] == ["globex"]
    everyone = report(ops).json()
    assert everyone["tenant"] is None and everyone["tenants"] == ["acme", "globex"]
    assert report(ops, "?tenant=globex").json()["pairs"] == 1
    assert report(ops, "?tenant=nobody").json()["pairs"] == 0
    assert report(acme, "?tenant=acme").json()["pairs"] == 2, "its own tenant, named, is fine"
    refused = report(acme, "?tenant=globex")
    assert refused.status_code == 403 and "tenant 'acme'" in refused.json()["error"]["message"]
    bad = report(ops, "?tenant=../x")
    assert bad.status_code == 400 and "tenant" in bad.json()["error"]["message"]
