"""Day one as a new user has it: the seed's variables, the guide's Gemma 2, a 2048-token context.

A real sdc-runtime process serves a tiny model with Gemma 2's own chat template
(no system turn; user/assistant turns must alternate) and a 2048-token context
(the guide's KULLM and KoAlpaca have that much) under the Hugging Face name
`google/gemma-2-9b-it`. The orchestrator is configured with nothing but the
seed's environment: LLM_SERVICE_TYPE=vllm, VLLM_HOST, VLLM_PORT,
LLM_MODEL_NAME=gemma-2-9b-it. Every call the seed made must answer 200 with an
answer: its defaults (a system message, max_tokens 2048, the bare model name)
are fitted to the served model, not sent as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.servers import runtime_process, serve

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime

SERVED = "google/gemma-2-9b-it"
SEOUL = "서울은 대한민국의 수도입니다. 부산은 항구 도시입니다. 쿠버네티스에서 GPU 노드를 사용합니다."


@pytest.fixture(scope="module")
def gemma_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sdc_runtime.tiny import GEMMA2_CHAT_TEMPLATE, make_tiny_model

    model = make_tiny_model(
        tmp_path_factory.mktemp("gemma") / "tiny-gemma2",
        max_positions=2048,
        chat_template=GEMMA2_CHAT_TEMPLATE,
        ends_early=True,  # short answers: a random model would otherwise fill the 2048-token context
    )
    with runtime_process(model, SERVED) as base:
        yield base


@pytest.fixture
def seed_orchestrator(
    gemma_runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., str]]:
    """An orchestrator built from the seed's environment variables only (plus a data directory)."""
    from sdc_orchestrator.app import create_app
    from sdc_orchestrator.settings import OrchestratorSettings

    host, port = gemma_runtime.removeprefix("http://").split(":")
    for name in [n for n in os.environ if n.startswith(("LLM_", "SDC_", "OLLAMA_", "VLLM_", "GEMINI_"))]:
        monkeypatch.delenv(name)
    with ExitStack() as stack:

        def start(**env: str) -> str:
            seed = {
                "LLM_SERVICE_TYPE": "vllm",
                "VLLM_HOST": host,
                "VLLM_PORT": port,
                "LLM_MODEL_NAME": "gemma-2-9b-it",
                "SDC_DATA_DIR": str(tmp_path / "data"),
            }
            for key, value in {**seed, **env}.items():
                monkeypatch.setenv(key, value)
            return stack.enter_context(serve(create_app(OrchestratorSettings())))

        yield start


def answered(resp: httpx.Response, field: str = "response") -> str:
    assert resp.status_code == 200, resp.text
    text = resp.json()[field]
    assert isinstance(text, str) and text.strip(), resp.text
    return text


def test_every_seed_call_answers(seed_orchestrator: Callable[..., str]) -> None:
    base = seed_orchestrator()
    with httpx.Client(base_url=base, timeout=120) as client:
        plain = client.post("/api/v1/chat", json={"message": "안녕하세요"})
        answered(plain)
        assert plain.json()["model"] == SERVED and plain.json()["sources"] == []

        assert client.post("/api/v1/documents", json={"id": "seoul", "text": SEOUL}).status_code == 200
        rag = client.post("/api/v1/chat", json={"message": "대한민국의 수도는 어디인가요?"})
        answered(rag)
        assert rag.json()["sources"][0]["id"] == "seoul"

        generated = client.post("/api/v1/generate", json={"query": "수도는?", "context": SEOUL})
        answered(generated)
        assert generated.json()["model_used"] == f"vllm:{SERVED}"

        openai_chat = client.post(
            "/v1/chat/completions",
            json={
                "model": "gemma-2-9b-it",  # the guide's name finds the served google/gemma-2-9b-it
                "messages": [
                    {"role": "system", "content": "한국어로 답하세요."},
                    {"role": "user", "content": "안녕하세요"},
                    {"role": "user", "content": "서울은 어디인가요?"},
                ],
            },
        )
        assert openai_chat.status_code == 200, openai_chat.text
        assert openai_chat.json()["choices"][0]["message"]["content"].strip()

        before = _ignored(client, "chat")
        extra = client.post("/api/v1/chat", json={"message": "안녕하세요", "session_id": "s-1", "history": []})
        answered(extra)
        assert _ignored(client, "chat") == before + 2, "unknown fields are ignored and counted"

        streamed = client.post("/api/v1/chat", json={"message": "안녕하세요", "stream": True, "use_rag": False})
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text, streamed.text[-500:]


def test_provider_reaches_its_own_host_whatever_the_service_type(seed_orchestrator: Callable[..., str]) -> None:
    base = seed_orchestrator(LLM_SERVICE_TYPE="ollama", OLLAMA_HOST="127.0.0.1", OLLAMA_PORT="9")
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕하세요", "provider": "vllm"}, timeout=120)
    answered(resp)
    assert resp.json()["provider"] == "vllm" and resp.json()["model"] == SERVED


def test_a_max_tokens_that_cannot_fit_is_a_400_naming_it(seed_orchestrator: Callable[..., str]) -> None:
    base = seed_orchestrator()
    resp = httpx.post(
        f"{base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "안녕하세요"}], "max_tokens": 2040},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert re.search(r"max_tokens 2040 cannot fit: the prompt is \d+ tokens", message), message
    assert "context of 2048 tokens" in message


def test_rag_drops_passages_to_fit(seed_orchestrator: Callable[..., str]) -> None:
    base = seed_orchestrator(SDC_RAG_TOP_K="4")
    with httpx.Client(base_url=base, timeout=120) as client:
        for i in range(4):  # syllables the tiny tokenizer never merged: ~900 tokens each, four cannot fit 2048
            text = f"서울 문서 {i}: " + "".join(chr(0xAC00 + (j * 37 + i * 11) % 11172) for j in range(300))
            assert client.post("/api/v1/documents", json={"id": f"d{i}", "text": text}).status_code == 200
        resp = client.post("/api/v1/chat", json={"message": "서울은 대한민국의 수도입니까?", "max_tokens": 64})
        answered(resp)
        assert 1 <= len(resp.json()["sources"]) < 4, [s["id"] for s in resp.json()["sources"]]


def _ignored(client: httpx.Client, route: str) -> float:
    metrics = client.get("/metrics").text
    found = re.search(rf'^sdc_orchestrator_ignored_fields_total{{route="{route}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
