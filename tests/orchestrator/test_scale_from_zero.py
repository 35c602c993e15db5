"""Scale from zero through the real orchestrator: requests held, one /scale write per burst, then served.

The orchestrator, a fake engine and a stand-in for the Kubernetes API are real HTTP servers on loopback.
The stand-in answers the /scale PATCH as the API server does (the JSON patch's test op decides) and then
plays the operator: a moment later it rewrites the published document with the replica ready.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.fake_openai import FakeBackend
from tests.support.servers import free_port, serve

MODEL = "tiny"


def unready(replicas: int = 0) -> dict[str, Any]:
    return {
        "name": "sdc/tiny",
        "namespace": "sdc",
        "localLLM": "tiny",
        "pool": None,
        "runtime": "transformers",
        "model": MODEL,
        "weight": 100,
        "role": "chat",
        "replicas": replicas,
        "atZero": replicas == 0,
        "phase": "Pending",
    }


def ready(base: str) -> dict[str, Any]:
    return {
        "name": "sdc/tiny",
        "namespace": "sdc",
        "localLLM": "tiny",
        "pool": None,
        "runtime": "transformers",
        "model": MODEL,
        "baseUrl": f"{base}/v1",
        "metricsUrl": None,
        "replica": "tiny-abc",
        "weight": 100,
        "role": "chat",
    }


class FakeKube:
    """PATCH .../localllms/NAME/scale: applies the JSON patch to spec.replicas, then publishes the replica."""

    def __init__(self, document: Path, engine_url: str, delay_s: float = 1.0, replicas: int = 0) -> None:
        self.replicas = replicas
        self.patches: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.document, self.engine_url, self.delay_s = document, engine_url, delay_s
        self.app = FastAPI()

        @self.app.patch("/apis/llm.sdc.dev/v1alpha1/namespaces/{namespace}/localllms/{name}/scale")
        async def scale(namespace: str, name: str, request: Request) -> JSONResponse:
            patch = json.loads(await request.body())
            self.patches.append((request.headers["content-type"], request.query_params.get("fieldManager", ""), patch))
            test, replace = patch  # the Scale's spec as the API server shows it: replicas omitted when 0
            if test != {"op": "test", "path": "/spec", "value": {"replicas": self.replicas} if self.replicas else {}}:
                return JSONResponse({"kind": "Status", "message": "the test operation failed"}, 422)
            self.replicas = replace["value"]
            timer = threading.Timer(self.delay_s, self.publish_ready)
            timer.daemon = True
            timer.start()
            return JSONResponse({"kind": "Scale", "spec": {"replicas": self.replicas}})

    def publish_ready(self) -> None:
        """What the operator publishes for the replicas the last write asked for."""
        if self.replicas:
            self.document.write_text(json.dumps({"endpoints": [ready(self.engine_url)]}))
        else:
            self.document.write_text(json.dumps({"endpoints": [], "unready": [unready()]}))


@pytest.fixture
def engine() -> Iterator[tuple[FakeBackend, str]]:
    fake = FakeBackend(MODEL, answer="깨어났습니다")
    with serve(fake.app) as url:
        yield fake, url


def start(orchestrator_app: Any, document: Path, **env: Any) -> str:
    base, _ = orchestrator_app(
        sdc_endpoints_file=document,
        sdc_namespace="sdc",
        llm_service_type="none",
        llm_fallback="none",
        sdc_hold_keepalive_s=0.2,
        **env,
    )
    return str(base)


@contextmanager
def at_zero(
    orchestrator_app: Any, tmp_path: Path, engine_url: str, delay_s: float, **env: Any
) -> Iterator[tuple[str, FakeKube]]:
    """An orchestrator whose model is published at zero replicas, and a Kubernetes API (FakeKube) whose scale
    patch publishes the engine `delay_s` later; yields the orchestrator's URL and the API."""
    document = tmp_path / "endpoints.json"
    document.write_text(json.dumps({"endpoints": [], "unready": [unready()]}))
    kube = FakeKube(document, engine_url, delay_s=delay_s)
    with serve(kube.app) as api:
        yield start(orchestrator_app, document, sdc_scale_api_url=api, **env), kube


def chat(client: httpx.Client, base: str, stream: bool) -> tuple[int, dict[str, str], str]:
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "안녕"}]}
    resp = client.post(f"{base}/v1/chat/completions", json=body)
    return resp.status_code, dict(resp.headers), resp.text


def test_a_burst_from_zero_is_held_scaled_once_and_served(
    orchestrator_app: Any, tmp_path: Path, engine: tuple[FakeBackend, str]
) -> None:
    fake, engine_url = engine
    with (
        at_zero(orchestrator_app, tmp_path, engine_url, 1.5, sdc_hold_max_wait_s=20) as (base, kube),
        httpx.Client(timeout=30) as client,
        ThreadPoolExecutor(24) as pool,
    ):
        results = list(pool.map(lambda i: chat(client, base, stream=i % 2 == 0), range(24)))
    assert [status for status, _, _ in results] == [200] * 24
    assert kube.patches == [
        (
            "application/json-patch+json",
            "sdc-autoscaler",
            [
                {"op": "test", "path": "/spec", "value": {}},
                {"op": "add", "path": "/spec/replicas", "value": 1},
            ],
        )
    ]
    streams = [text for i, (_, _, text) in enumerate(results) if i % 2 == 0]
    assert all(": waiting for a replica" in text and "깨어났습니다" in text and "[DONE]" in text for text in streams)
    assert all("깨어났습니다" in json.loads(text)["choices"][0]["message"]["content"] for _, _, text in results[1::2])
    assert fake.calls == 24
    # The 24 released at once learn the new replica's /v1/models once, not each before its chat.
    assert fake.model_calls == 1


def test_a_held_text_completion_stream_gets_keep_alives(
    orchestrator_app: Any, tmp_path: Path, engine: tuple[FakeBackend, str]
) -> None:
    fake, engine_url = engine
    with at_zero(orchestrator_app, tmp_path, engine_url, 1.0) as (base, kube), httpx.Client(timeout=30) as client:
        resp = client.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "안녕", "stream": True})
    assert resp.status_code == 200 and len(kube.patches) == 1
    assert ": waiting for a replica" in resp.text and "[DONE]" in resp.text
    assert len(fake.completions) == 1


def test_a_held_seed_chat_stream_gets_keep_alives_then_its_sources_and_answer(
    orchestrator_app: Any, tmp_path: Path, engine: tuple[FakeBackend, str]
) -> None:
    """/api/v1/chat streamed for a model at zero: the 200 at once, comments while held, then the sources event
    (naming the replica's model and a response id that feedback accepts) and the answer."""
    document = tmp_path / "endpoints.json"
    document.write_text(json.dumps({"endpoints": [], "unready": [unready()]}))
    fake, engine_url = engine
    kube = FakeKube(document, engine_url, delay_s=1.0)
    with serve(kube.app) as api:
        base = start(orchestrator_app, document, sdc_scale_api_url=api)
        body = {"message": "안녕", "model": MODEL, "stream": True, "use_rag": False}
        with httpx.Client(timeout=30) as client:
            started = time.monotonic()
            with client.stream("POST", f"{base}/api/v1/chat", json=body) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                first = next(lines)
                first_after = time.monotonic() - started
                text = first + "\n" + "\n".join(lines)
            assert first.startswith(": waiting for a replica") and first_after < 0.9, (first, first_after)
            assert text.index("event: sources") > text.rindex(": waiting for a replica")
            meta = json.loads(text.split("event: sources\ndata: ", 1)[1].split("\n", 1)[0])
            assert meta["model"] == MODEL and meta["provider"] == "transformers"
            assert "깨어났습니다" in text and text.rstrip().endswith("data: [DONE]")
            rated = client.post(f"{base}/api/v1/feedback", json={"response_id": meta["response_id"], "rating": 1})
            assert rated.status_code == 200, rated.text
    assert len(kube.patches) == 1 and fake.calls == 1


def test_past_the_bounds_429_and_503_with_retry_after_never_a_hang(
    orchestrator_app: Any, tmp_path: Path, engine: tuple[FakeBackend, str]
) -> None:
    """Nobody brings the replica up: two wait their longest then 503, the third is refused at once (429),
    a held stream ends with an error event; every refusal says when to retry."""
    _, engine_url = engine
    bounds = {"sdc_hold_max_wait_s": 1.5, "sdc_hold_max_per_model": 2}
    with (
        at_zero(orchestrator_app, tmp_path, engine_url, 3600, **bounds) as (base, kube),
        httpx.Client(timeout=10) as client,
        ThreadPoolExecutor(3) as pool,
    ):
        results = list(pool.map(lambda _: chat(client, base, stream=False), range(3)))
        streamed = chat(client, base, stream=True)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [429, 503, 503]
    assert all(int(headers["retry-after"]) >= 1 for _, headers, _ in results)
    assert all("retry later" in json.loads(text)["error"]["message"] for _, _, text in results)
    # One write for the three; the stream came after the longest wait, found the ask stale and the model still
    # published at zero, and asked again: harmless, the API server's test op (replicas is 1 now) refused it.
    assert len(kube.patches) == 2 and kube.replicas == 1
    assert streamed[0] == 200 and '"code": 503' in streamed[2] and "[DONE]" in streamed[2]
    assert ": waiting for a replica" in streamed[2]


def test_at_zero_without_scale_access_is_503_at_once(orchestrator_app: Any, tmp_path: Path) -> None:
    document = tmp_path / "endpoints.json"
    document.write_text(json.dumps({"endpoints": [], "unready": [unready()]}))
    base = start(orchestrator_app, document)
    with httpx.Client(timeout=10) as client:
        status, headers, text = chat(client, base, stream=False)
        unknown = client.post(
            f"{base}/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        )
    assert (status, headers["retry-after"]) == (503, "30")
    assert "kubectl scale llm tiny --replicas=1" in json.loads(text)["error"]["message"]
    assert unknown.status_code == 404  # a model published nowhere is still not served


@pytest.mark.parametrize(("min_replicas", "writes"), [(0, 1), (1, 0)])
def test_an_idle_model_with_autoscaling_is_scaled_down_after_its_delay(
    orchestrator_app: Any, tmp_path: Path, engine: tuple[FakeBackend, str], min_replicas: int, writes: int
) -> None:
    """One request, then idle: after scaleDownDelaySeconds (1 s here) the model goes 1 -> 0 when minReplicas is 0
    (a test-and-set from the one published replica), and is then published at zero; never below minReplicas."""
    _, engine_url = engine
    document = tmp_path / "endpoints.json"
    entry = {
        **ready(engine_url),
        "autoscaling": {"minReplicas": min_replicas, "maxReplicas": 2, "scaleDownDelaySeconds": 1},
    }
    document.write_text(json.dumps({"endpoints": [entry]}))
    kube = FakeKube(document, engine_url, delay_s=0.1, replicas=1)
    with serve(kube.app) as api:
        base = start(orchestrator_app, document, sdc_scale_api_url=api, sdc_scale_down_interval_s=0.1)
        with httpx.Client(timeout=10) as client:
            assert chat(client, base, stream=False)[0] == 200
            answered = time.monotonic()
            deadline = answered + 3
            while time.monotonic() < deadline and len(kube.patches) < 1:
                time.sleep(0.05)
            scaled_after = time.monotonic() - answered
            time.sleep(0.5)  # no second step: at zero it is not published ready any more
    assert len(kube.patches) == writes
    if writes:
        assert 0.9 <= scaled_after < 2.5
        assert kube.patches[0][2] == [
            {"op": "test", "path": "/spec", "value": {"replicas": 1}},
            {"op": "add", "path": "/spec/replicas", "value": 0},
        ]
        assert json.loads(document.read_text())["unready"][0]["atZero"] is True


def test_an_orchestrator_killed_while_holding_gives_its_clients_an_error_not_a_hang(tmp_path: Path) -> None:
    """The hold lives in the process: killed (SIGKILL, no goodbye), its held clients' connections close at once."""
    document = tmp_path / "endpoints.json"
    document.write_text(json.dumps({"endpoints": [], "unready": [unready(replicas=1)]}))  # starting: held, no write
    port = free_port()
    env = {
        **os.environ,
        "SDC_ENDPOINTS_FILE": str(document),
        "SDC_NAMESPACE": "sdc",
        "LLM_SERVICE_TYPE": "none",
        "LLM_FALLBACK": "none",
        "SDC_DATA_DIR": str(tmp_path / "data"),
        "SDC_HOLD_KEEPALIVE_S": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdc_orchestrator", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _live(base):
            assert proc.poll() is None and time.monotonic() < deadline, "the orchestrator did not start"
            time.sleep(0.2)
        results: dict[str, Any] = {}

        def held(stream: bool) -> None:
            body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "안녕"}]}
            try:
                with httpx.Client(timeout=60) as client:
                    results[str(stream)] = client.post(f"{base}/v1/chat/completions", json=body).status_code
            except httpx.HTTPError as err:
                results[str(stream)] = type(err).__name__

        threads = [threading.Thread(target=held, args=(s,)) for s in (False, True)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # both held now
        assert results == {}
        killed = time.monotonic()
        proc.kill()
        for thread in threads:
            thread.join(10)
        ended_after = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
    # Neither hangs: the held request and the held stream (whose 200 and keep-alives were sent) both break.
    assert set(results.values()) <= {"RemoteProtocolError", "ReadError"} and len(results) == 2, results
    assert ended_after < 5, f"clients still waiting {ended_after:.1f}s after the kill"


def _live(base: str) -> bool:
    try:
        return httpx.get(f"{base}/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
