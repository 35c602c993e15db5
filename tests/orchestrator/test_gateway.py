"""The gateway over real HTTP: API keys, per-key rate and concurrency limits, the body limit, key metrics."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sdc_orchestrator.gateway import KeyFileError, KeyRing, Limits, TokenBucket, parse_keys

from tests.support.fake_openai import FakeBackend
from tests.support.metrics import sample

Backends = dict[str, tuple[FakeBackend, str]]
CHAT = {"message": "안녕하세요", "provider": "vllm"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    path.write_text(f"# team keys\nteam-a:plain-secret\n\nteam-b:sha256:{digest}\nops:ops-secret\n")
    return path


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- pure parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "text", "fragment"),
    [
        ("no separator", "team-a", "line 1"),
        ("empty key", "team-a:", "line 1"),
        ("empty name", ":secret", "line 1"),
        ("short digest", "x:sha256:abcd", "64 hex"),
        ("non-hex digest", "x:sha256:" + "z" * 64, "64 hex"),
    ],
)
def test_bad_key_lines_are_refused(case: str, text: str, fragment: str) -> None:
    with pytest.raises(KeyFileError, match=fragment):
        parse_keys(text)


def test_plain_and_hashed_keys_parse_to_the_same_digest() -> None:
    digest = hashlib.sha256(b"k1").hexdigest()
    assert parse_keys("a:k1") == {digest: "a"}
    assert parse_keys(f"a:sha256:{digest.upper()}") == {digest: "a"}
    assert parse_keys("a:with:colons") == {hashlib.sha256(b"with:colons").hexdigest(): "a"}


def test_token_bucket_bursts_to_the_limit_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock)
    assert [bucket.take() for _ in range(60)] == [0.0] * 60
    wait = bucket.take()
    assert 0.9 < wait <= 1.0  # 60/min: one token a second
    clock.now += 1.0
    assert bucket.take() == 0.0
    assert bucket.take() > 0


def test_concurrency_cap_counts_per_key() -> None:
    limits = Limits(rate_per_min=0, max_concurrent=2)
    assert limits.admit("a") is None
    assert limits.admit("a") is None
    refused = limits.admit("a")
    assert refused is not None and "2 requests in flight" in refused[0]
    assert limits.admit("b") is None
    limits.release("a")
    assert limits.admit("a") is None


def test_keyring_rereads_a_changed_file_and_keeps_keys_on_a_broken_one(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "keys"
    path.write_text("a:one\n")
    ring = KeyRing(path, clock)
    assert ring.name_of("one") == "a"
    path.write_text("a:two\nb:three\n")
    os.utime(path, (5, 5))
    assert ring.name_of("two") is None, "checked at most once a second"
    clock.now += 1.5
    assert ring.name_of("two") == "a"
    assert ring.name_of("one") is None
    path.write_text("garbage line\n")
    os.utime(path, (9, 9))
    clock.now += 1.5
    assert ring.name_of("three") == "b", "a broken file keeps the last good keys"


# -- over HTTP --------------------------------------------------------------------------------------
def test_keys_guard_every_route_but_health_and_metrics(orchestrator: Callable[..., str], keys_file: Path) -> None:
    base = orchestrator(sdc_api_keys_file=keys_file)
    for path in ("/healthz", "/livez", "/metrics"):
        assert httpx.get(base + path).status_code == 200, path
    assert httpx.get(base + "/readyz").status_code in (200, 503)
    guarded = [
        ("POST", "/api/v1/chat", CHAT),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("GET", "/v1/models", None),
        ("POST", "/api/v1/generate", {"query": "q"}),
        ("POST", "/generate", {"query": "q"}),
        ("POST", "/api/v1/documents", {"id": "d", "text": "서울"}),
        ("DELETE", "/api/v1/documents/d", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", "/no/such/route", None),
    ]
    for method, path, body in guarded:
        for headers in ({}, auth("wrong"), {"Authorization": "Basic cGxhaW4tc2VjcmV0"}, {"Authorization": "Bearer"}):
            resp = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "API key" in resp.json()["error"]["message"]
    for key in ("plain-secret", "hashed-secret"):
        resp = httpx.post(base + "/api/v1/chat", json=CHAT, headers=auth(key), timeout=10)
        assert resp.status_code == 200, resp.text
    assert httpx.get(base + "/v1/models", headers=auth("ops-secret")).status_code == 200


def test_keys_file_is_reread_when_it_changes(orchestrator: Callable[..., str], keys_file: Path) -> None:
    base = orchestrator(sdc_api_keys_file=keys_file)
    assert httpx.get(base + "/v1/models", headers=auth("plain-secret")).status_code == 200
    keys_file.write_text("team-a:rotated-secret\n")
    deadline = time.monotonic() + 5
    while httpx.get(base + "/v1/models", headers=auth("rotated-secret")).status_code != 200:
        assert time.monotonic() < deadline, "the new key never worked"
        time.sleep(0.2)
    assert httpx.get(base + "/v1/models", headers=auth("plain-secret")).status_code == 401


def test_document_changes_can_be_limited_to_admin_keys(orchestrator: Callable[..., str], keys_file: Path) -> None:
    base = orchestrator(sdc_api_keys_file=keys_file, sdc_admin_key_names="ops")
    doc = {"id": "d1", "text": "부산은 항구 도시입니다."}
    resp = httpx.post(base + "/api/v1/documents", json=doc, headers=auth("plain-secret"), timeout=30)
    assert resp.status_code == 403 and "team-a" in resp.text
    assert httpx.delete(base + "/api/v1/documents/d1", headers=auth("plain-secret")).status_code == 403
    assert httpx.post(base + "/api/v1/documents", json=doc, headers=auth("ops-secret"), timeout=30).status_code == 200
    chat = httpx.post(base + "/api/v1/chat", json={"message": "부산"}, headers=auth("plain-secret"), timeout=10)
    assert chat.status_code == 200 and chat.json()["sources"], "other keys still chat over the documents"
    assert httpx.delete(base + "/api/v1/documents/d1", headers=auth("ops-secret")).status_code == 200


def test_unset_keys_file_serves_open_with_a_warning(
    orchestrator: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "sdc_orchestrator.gateway"):
        base = orchestrator()
    assert "SDC_API_KEYS_FILE is not set" in caplog.text
    assert httpx.post(base + "/api/v1/chat", json=CHAT, timeout=10).status_code == 200


def _ops_admitted(text: str) -> float:
    return sample(text, "sdc_orchestrator_key_requests_total", key="ops", outcome="admitted")


def test_a_burst_beyond_the_rate_limit_gets_429_with_retry_after(
    orchestrator: Callable[..., str], keys_file: Path, backends: Backends
) -> None:
    limit, burst = 10, 25
    base = orchestrator(sdc_api_keys_file=keys_file, sdc_rate_limit_rpm=limit)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(base + "/api/v1/chat", json=CHAT, headers=auth("plain-secret"), timeout=10),
                range(burst),
            )
        )
    codes = Counter(r.status_code for r in answers)
    assert set(codes) == {200, 429}, codes
    assert limit - 1 <= codes[200] <= limit + 1, codes
    for resp in answers:
        if resp.status_code == 429:
            assert 1 <= int(resp.headers["retry-after"]) <= 60
            assert "10 requests per minute" in resp.json()["error"]["message"]
    assert backends["vllm"][0].calls == codes[200], "a refused request never reaches a backend"
    # Another key has its own bucket (and its admissions are counted: read by value, the series may exist already).
    ops_before = _ops_admitted(httpx.get(base + "/metrics", headers=auth("ops-secret")).text)
    assert httpx.post(base + "/api/v1/chat", json=CHAT, headers=auth("ops-secret"), timeout=10).status_code == 200
    # Without a key /metrics names no key, only the aggregate; a key that may see names gets them.
    public = httpx.get(base + "/metrics").text
    assert "team-a" not in public and 'key="ops"' not in public and "sdc_orchestrator_key_requests" not in public
    aggregate = re.search(r'sdc_orchestrator_gateway_requests_total\{outcome="rate_limited"\} (\S+)', public)
    assert aggregate and float(aggregate.group(1)) >= codes[429], "the aggregate stays public (the registry is global)"
    assert "team-a" not in httpx.get(base + "/metrics", headers=auth("wrong")).text
    metrics = httpx.get(base + "/metrics", headers=auth("ops-secret")).text
    assert f'sdc_orchestrator_key_requests_total{{key="team-a",outcome="rate_limited"}} {float(codes[429])}' in metrics
    assert _ops_admitted(metrics) - ops_before == 1, "the ops chat was admitted and counted (scrapes are not)"
    assert "plain-secret" not in metrics and "ops-secret" not in metrics, "metrics name keys, never show them"


def test_concurrency_cap_per_key(orchestrator: Callable[..., str], keys_file: Path, backends: Backends) -> None:
    base = orchestrator(sdc_api_keys_file=keys_file, sdc_max_concurrent_per_key=2)
    backends["vllm"][0].delay_s = 1.0
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(base + "/api/v1/chat", json=CHAT, headers=auth("plain-secret"), timeout=10),
                range(5),
            )
        )
    codes = Counter(r.status_code for r in answers)
    assert codes[200] == 2 and codes[429] == 3, codes
    assert all(r.headers.get("retry-after") for r in answers if r.status_code == 429)
    backends["vllm"][0].delay_s = 0
    assert httpx.post(base + "/api/v1/chat", json=CHAT, headers=auth("plain-secret"), timeout=10).status_code == 200


def chunked(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("route", ["/api/v1/chat", "/v1/chat/completions", "/api/v1/documents", "/generate"])
def test_bodies_over_the_limit_are_413_declared_or_chunked(orchestrator: Callable[..., str], route: str) -> None:
    base = orchestrator(sdc_max_body_bytes=64 * 1024)
    big = b'{"message": "' + b"a" * 200_000 + b'"}'
    started = time.monotonic()
    declared = httpx.post(base + route, content=big, headers={"content-type": "application/json"}, timeout=10)
    assert declared.status_code == 413, declared.text
    assert "SDC_MAX_BODY_BYTES" in declared.text
    streamed = httpx.post(base + route, content=chunked(big), headers={"content-type": "application/json"}, timeout=10)
    assert streamed.status_code == 413, streamed.text
    assert time.monotonic() - started < 5


def test_the_gemini_key_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart mounts the Gemini key as a file (GEMINI_API_KEY_FILE): not inherited by child processes."""
    from sdc_orchestrator.settings import OrchestratorSettings

    key = tmp_path / "api-key"
    key.write_text("sk-gemini-from-file\n")
    monkeypatch.setenv("GEMINI_API_KEY_FILE", str(key))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    settings = OrchestratorSettings()
    assert settings.gemini_api_key is not None and settings.gemini_api_key.get_secret_value() == "sk-gemini-from-file"
    monkeypatch.setenv("GEMINI_API_KEY", "sk-env")
    explicit = OrchestratorSettings().gemini_api_key
    assert explicit is not None and explicit.get_secret_value() == "sk-env", "an explicit key wins"


def test_tenants_never_see_each_others_documents_or_answers(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    keys = tmp_path / "tenant-keys"
    keys.write_text("alice@acme:acme-secret\nbob@globex:globex-secret\nops:ops-secret\n")
    base = orchestrator(sdc_api_keys_file=keys)
    acme, globex, ops = auth("acme-secret"), auth("globex-secret"), auth("ops-secret")
    doc = {"id": "plan", "text": "zqacme 인수 계획: 부산 공장을 내년에 매각한다."}
    assert httpx.post(base + "/api/v1/documents", json=doc, headers=acme, timeout=30).status_code == 200

    def sources(headers: dict[str, str]) -> list[str]:
        resp = httpx.post(base + "/api/v1/chat", json={"message": "zqacme 계획 알려줘"}, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["sources"]]

    assert sources(acme) == ["plan"]
    assert sources(globex) == [] and sources(ops) == [], "another tenant (and the default one) retrieves nothing"
    assert httpx.delete(base + "/api/v1/documents/plan", headers=globex).status_code == 404
    assert sources(acme) == ["plan"], "another tenant cannot delete it either"
    # An answer is rated only by its own tenant; for another it does not exist.
    answer = httpx.post(base + "/api/v1/chat", json={"message": "안녕", "use_rag": False}, headers=acme, timeout=10)
    rating = {"response_id": answer.json()["response_id"], "rating": 1}
    assert httpx.post(base + "/api/v1/feedback", json=rating, headers=globex).status_code == 404
    assert httpx.post(base + "/api/v1/feedback", json=rating, headers=acme).status_code == 200
    # The tenant's documents live in its own directory; the default tenant keeps the data directory.
    assert httpx.delete(base + "/api/v1/documents/plan", headers=acme).status_code == 200


@pytest.mark.parametrize("line", ["a@:k", "a@../x:k", "a@x/y:k", "a@" + "t" * 65 + ":k"])
def test_a_malformed_tenant_is_refused(line: str) -> None:
    with pytest.raises(KeyFileError):
        parse_keys(line)
