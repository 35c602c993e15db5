"""Router accounting: cancelled and abandoned attempts give their slot back and never cool a backend."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sdc_orchestrator.router import Router

from tests.support.fake_openai import FakeBackend
from tests.support.metrics import sample
from tests.support.servers import free_port

Backends = dict[str, tuple[FakeBackend, str]]
Start = Callable[..., tuple[str, FastAPI]]


def two_endpoints(tmp_path: Path, backends: Backends, model: str | None = "gemma") -> Path:
    path = tmp_path / "endpoints.json"
    items = [
        {"name": f"team/{name}", "runtime": name, "model": model, "baseUrl": backends[name][1] + "/v1", "weight": 100}
        for name in ("vllm", "ollama")
    ]
    path.write_text(json.dumps({"endpoints": items}))
    return path


def router_of(app: FastAPI) -> Router:
    router: Router = app.state.sdc.router
    return router


def wait_for(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def settled(router: Router) -> bool:
    return all(h.in_flight == 0 for h in router.health.values())


def shares(base: str, n: int = 200) -> Counter[str]:
    counts: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            counts[
                client.post(f"{base}/api/v1/chat", json={"message": "q", "provider": "auto"}).json()["provider"]
            ] += 1
    return counts


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_cancelled_requests_release_their_slot_and_cool_nothing(
    orchestrator_app: Start, backends: Backends, tmp_path: Path, stream: bool
) -> None:
    base, app = orchestrator_app(
        sdc_endpoints_file=two_endpoints(tmp_path, backends), llm_service_type="gemini", llm_fallback="none"
    )
    router = router_of(app)
    for name in ("vllm", "ollama"):
        backends[name][0].mode = "slow_stream" if stream else "slow"
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "gemma", "stream": stream}
    for _ in range(10):
        if stream:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=5) as resp:
                assert resp.status_code == 200
                next(resp.iter_bytes())  # the first event, then the client goes away
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/v1/chat/completions", json=body, timeout=0.3)
    wait_for(lambda: settled(router), f"in-flight counts back to 0: {router.health}")
    assert not any(router.is_cooling(e) for e in app.state.sdc.registry.all()), "a client leaving cools nothing"
    assert all(h.failures == 0 for h in router.health.values())
    for name in ("vllm", "ollama"):
        backends[name][0].mode = "ok"
    counts = shares(base)
    assert 65 <= counts["vllm"] <= 135, counts  # still about half each (weights 100/100)
    assert settled(router)


def test_streamed_requests_reach_the_request_metrics(orchestrator: Callable[..., str]) -> None:
    base = orchestrator()

    def streamed_ok() -> float:
        for line in httpx.get(f"{base}/metrics").text.splitlines():
            if line.startswith('sdc_orchestrator_stream_outcomes_total{outcome="ok",provider="vllm"}'):
                return float(line.split()[-1])
        return 0.0

    labels = {"model": "google/gemma-2-9b-it", "provider": "vllm"}

    def counted() -> tuple[float, float]:
        text = httpx.get(f"{base}/metrics").text
        return (
            sample(text, "sdc_orchestrator_requests_total", outcome="ok", **labels),
            sample(text, "sdc_orchestrator_request_seconds_count", **labels),
        )

    before = streamed_ok()
    requests_before, timed_before = counted()
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "google/gemma-2-9b-it", "stream": True}
    for _ in range(3):
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as resp:
            assert b"[DONE]" in resp.read()
    with httpx.stream("POST", f"{base}/api/v1/chat", json={"message": "q", "stream": True}, timeout=10) as resp:
        assert b"[DONE]" in resp.read()
    wait_for(lambda: streamed_ok() == before + 4, "four streams counted")
    # By value: the series exist in the process-wide registry once any earlier test counted a request.
    requests_after, timed_after = counted()
    assert requests_after - requests_before == 4, "each stream counted once as a request"
    assert timed_after - timed_before == 4, "each stream's latency observed once"


def test_model_discovery_failures_are_cached(
    orchestrator: Callable[..., str], backends: Backends, tmp_path: Path
) -> None:
    # `none`: only the published endpoints (under `gemini`, the fixture's VLLM_HOST would be one more
    # endpoint on the same fake, reachable by `provider: "vllm"` as the seed's code had it).
    base = orchestrator(
        sdc_endpoints_file=two_endpoints(tmp_path, backends, model=None), llm_service_type="none", llm_fallback="none"
    )
    backends["vllm"][0].mode = "models_down"
    for _ in range(5):
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 200
        httpx.post(f"{base}/api/v1/chat", json={"message": "q", "provider": "vllm"}, timeout=10)
    assert backends["vllm"][0].model_calls == 1, "a failed discovery is not retried on every request"
    assert "gemma2:9b" in httpx.get(f"{base}/v1/models").text, "the healthy backend's model is still listed"


def test_error_bodies_name_providers_and_models_never_addresses(
    orchestrator: Callable[..., str], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here
    path = tmp_path / "endpoints.json"
    entry = {"name": "team/gemma", "runtime": "vllm", "model": "gemma", "baseUrl": f"http://127.0.0.1:{port}/v1"}
    path.write_text(json.dumps({"endpoints": [entry]}))
    base = orchestrator(sdc_endpoints_file=path, llm_fallback="none", vllm_port=free_port())
    for body in ({"message": "q", "provider": "vllm"}, {"message": "q", "model": "gemma"}):
        resp = httpx.post(f"{base}/api/v1/chat", json=body, timeout=10)
        assert resp.status_code in (502, 504), resp.text
        assert "127.0.0.1" not in resp.text and str(port) not in resp.text, resp.text
        tried = resp.json()["error"]["tried"]
        assert {"provider": "vllm", "endpoint": "team/gemma", "model": "gemma"}.items() <= tried[0].items() or any(
            t["endpoint"] == "team/gemma" and t["model"] == "gemma" for t in tried
        ), tried
        assert "connection failed" in resp.text


def test_gemini_named_explicitly_answers_with_weight_zero(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(gemini_weight=0, llm_fallback="none")
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "q", "provider": "gemini"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["provider"] == "gemini"
    auto = {
        httpx.post(f"{base}/api/v1/chat", json={"message": "q", "provider": "auto"}, timeout=10).json()["provider"]
        for _ in range(20)
    }
    assert auto == {"vllm"}, "weight 0 still keeps gemini out of auto"
