"""Fitting requests to the served model, against a stand-in that answers as vLLM does for Gemma 2.

vLLM tells its context in /v1/models (`max_model_len`), counts at /tokenize, and
refuses a system turn with a 400 "System role not supported" (the template's
own words): the orchestrator must learn from that, fold, and answer 200.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sdc_orchestrator.app import create_app
from sdc_orchestrator.chat_template import fold, refusal
from sdc_orchestrator.fitting import resolve_name
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.servers import serve

CONTEXT = 2048
SERVED = "google/gemma-2-9b-it"


class GemmaOnVllm:
    """vLLM's answers for a Gemma 2 model: its error shape, its context check, its template's refusals."""

    def __init__(self) -> None:
        self.chats: list[dict[str, Any]] = []
        self.tokenized = 0
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/tokenize")(self.tokenize)
        self.app.post("/v1/chat/completions")(self.chat)

    @staticmethod
    def error(message: str) -> JSONResponse:
        return JSONResponse(
            {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}, 400
        )

    @staticmethod
    def template_error(messages: list[dict[str, Any]]) -> str | None:
        if messages[0]["role"] == "system":
            return "System role not supported"
        for i, m in enumerate(messages):
            if (m["role"] == "user") != (i % 2 == 0):
                return "Conversation roles must alternate user/assistant/user/assistant/..."
        return None

    @staticmethod
    def count(messages: list[dict[str, Any]]) -> int:
        return sum(len(str(m["content"])) for m in messages) + 8 * len(messages)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": SERVED, "object": "model", "max_model_len": CONTEXT}]}

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.tokenized += 1
        if problem := self.template_error(body["messages"]):
            return self.error(problem)
        return JSONResponse({"count": self.count(body["messages"]), "max_model_len": CONTEXT, "tokens": []})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.chats.append(body)
        if body["model"] != SERVED:
            return JSONResponse({"object": "error", "message": f"The model `{body['model']}` does not exist."}, 404)
        if problem := self.template_error(body["messages"]):
            return self.error(problem)
        prompt = self.count(body["messages"])
        if prompt + body["max_tokens"] > CONTEXT:
            return self.error(
                f"This model's maximum context length is {CONTEXT} tokens. However, you requested "
                f"{prompt + body['max_tokens']} tokens ({prompt} in the messages, {body['max_tokens']} in the completion)."
            )
        if body.get("stream"):

            async def events() -> Iterator[str]:  # type: ignore[misc]
                chunk = {"choices": [{"index": 0, "delta": {"content": "서울입니다."}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "model": SERVED,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "서울입니다."}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 3},
            }
        )


@pytest.fixture
def gemma() -> Iterator[tuple[GemmaOnVllm, str]]:
    fake = GemmaOnVllm()
    with serve(fake.app) as base:
        yield fake, base


@pytest.fixture
def orchestrator(gemma: tuple[GemmaOnVllm, str], tmp_path: Path) -> Iterator[str]:
    port = int(gemma[1].rsplit(":", 1)[1])
    settings = OrchestratorSettings(
        llm_service_type="vllm",
        vllm_host="127.0.0.1",
        vllm_port=port,
        llm_model_name="gemma-2-9b-it",
        llm_fallback="none",
        sdc_data_dir=tmp_path / "data",
    )
    with serve(create_app(settings)) as base:
        yield base


def test_a_refused_system_turn_is_learned_and_folded(gemma: tuple[GemmaOnVllm, str], orchestrator: str) -> None:
    fake, _ = gemma
    resp = httpx.post(f"{orchestrator}/api/v1/chat", json={"message": "수도는?", "use_rag": False}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"] == "서울입니다." and resp.json()["model"] == SERVED
    sent = fake.chats[-1]
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["messages"][0]["content"].startswith("당신은 SDC 문서 도우미입니다.")
    assert sent["messages"][0]["content"].endswith("수도는?")
    # Defaulted max_tokens (2048) clamped to what the prompt leaves of the 2048-token context.
    assert sent["max_tokens"] == CONTEXT - fake.count(sent["messages"])
    calls = len(fake.chats)
    again = httpx.post(f"{orchestrator}/api/v1/chat", json={"message": "부산은?", "use_rag": False}, timeout=30)
    assert again.status_code == 200 and len(fake.chats) == calls + 1, "learned once: no refused attempt again"


def test_openai_route_folds_system_and_merges_turns(gemma: tuple[GemmaOnVllm, str], orchestrator: str) -> None:
    fake, _ = gemma
    messages = [
        {"role": "system", "content": "한국어로."},
        {"role": "user", "content": "안녕"},
        {"role": "user", "content": "수도는?"},
        {"role": "assistant", "content": "무엇의?"},
        {"role": "user", "content": "한국."},
    ]
    for stream in (False, True):
        resp = httpx.post(
            f"{orchestrator}/v1/chat/completions",
            json={"model": "gemma-2-9b-it", "messages": messages, "stream": stream},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        assert [m["role"] for m in fake.chats[-1]["messages"]] == ["user", "assistant", "user"]
        assert fake.chats[-1]["messages"][0]["content"] == "한국어로.\n\n안녕\n\n수도는?"


def test_explicit_max_tokens_that_cannot_fit_is_a_400(gemma: tuple[GemmaOnVllm, str], orchestrator: str) -> None:
    fake, _ = gemma
    resp = httpx.post(
        f"{orchestrator}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "가" * 100}], "max_tokens": 2000},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert message.startswith("max_tokens 2000 cannot fit: the prompt is 108 tokens")
    assert "context of 2048 tokens, so at most 1940 tokens can be asked for" in message
    assert not fake.chats, "refused before it reached the backend"
    fits = httpx.post(
        f"{orchestrator}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "가" * 100}], "max_tokens": 1940},
        timeout=30,
    )
    assert fits.status_code == 200 and fake.chats[-1]["max_tokens"] == 1940


def test_a_chat_that_surely_fits_is_not_counted_and_a_refusal_is_retried_folded(
    gemma: tuple[GemmaOnVllm, str], orchestrator: str
) -> None:
    fake, _ = gemma
    messages = [{"role": "system", "content": "짧게."}, {"role": "user", "content": "안녕"}]
    resp = httpx.post(f"{orchestrator}/v1/chat/completions", json={"messages": messages, "max_tokens": 100}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert fake.tokenized == 0, "far from the context: no count asked"
    assert [[m["role"] for m in c["messages"]] for c in fake.chats] == [["system", "user"], ["user"]]
    assert fake.chats[-1]["max_tokens"] == 100


@pytest.mark.parametrize(
    ("wanted", "served", "expected"),
    [
        pytest.param("gemma-2-9b-it", ["google/gemma-2-9b-it"], "google/gemma-2-9b-it", id="last segment"),
        pytest.param("Gemma-2-9B-IT", ["google/gemma-2-9b-it"], "google/gemma-2-9b-it", id="case-insensitive"),
        pytest.param("google/gemma-2-9b-it", ["google/gemma-2-9b-it"], "google/gemma-2-9b-it", id="exact"),
        pytest.param("gemma-2-9b-it", ["a/gemma-2-9b-it", "b/gemma-2-9b-it"], None, id="ambiguous"),
        pytest.param("gemma2:9b", ["google/gemma-2-9b-it"], None, id="no match"),
        pytest.param("other/gemma-2-9b-it", ["google/gemma-2-9b-it"], "google/gemma-2-9b-it", id="other owner"),
    ],
)
def test_served_name_rule(wanted: str, served: list[str], expected: str | None) -> None:
    assert resolve_name(wanted, served) == expected


S, U, A = "system", "user", "assistant"


@pytest.mark.parametrize(
    ("messages", "system_role", "alternate", "expected"),
    [
        pytest.param([(S, "s"), (U, "u")], False, False, [(U, "s\n\nu")], id="system folded"),
        pytest.param([(S, "s"), (U, "u")], True, False, [(S, "s"), (U, "u")], id="system kept"),
        pytest.param([(S, "s")], False, True, [(U, "s")], id="system alone becomes the user turn"),
        pytest.param([(U, "a"), (U, "b"), (A, "c")], True, True, [(U, "a\n\nb"), (A, "c")], id="merged"),
        pytest.param(
            [(S, "s1"), (U, "u"), ("developer", "d"), (A, "a")], False, True, [(U, "s1\n\nd\n\nu"), (A, "a")], id="dev"
        ),
    ],
)
def test_fold(
    messages: list[tuple[str, str]], system_role: bool, alternate: bool, expected: list[tuple[str, str]]
) -> None:
    given = [{"role": r, "content": c} for r, c in messages]
    out = fold(given, system_role=system_role, alternate_roles=alternate)
    assert [(m["role"], m["content"]) for m in out] == expected
    assert given == [{"role": r, "content": c} for r, c in messages], "the input is not changed"


def test_refusals_are_recognised() -> None:
    assert refusal({"message": "System role not supported"}) == "system_role"
    assert refusal({"error": {"message": "Conversation roles must alternate user/assistant/..."}}) == "alternate_roles"
    assert refusal({"message": "This model's maximum context length is 2048 tokens."}) is None


class OllamaLike:
    """Ollama's answers: its tags at /v1/models, num_ctx in /api/show, a 404 for a model it has not pulled."""

    def __init__(self) -> None:
        self.chats: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "gemma2:9b"}, {"id": "llama3.1:8b"}]}

        @self.app.post("/api/show")
        async def show() -> dict[str, Any]:
            return {"parameters": "stop <end_of_turn>\nnum_ctx 4096", "model_info": {"gemma2.context_length": 8192}}

        @self.app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.chats.append(body)
            if body["model"] not in ("gemma2:9b", "llama3.1:8b"):
                message = f'model "{body["model"]}" not found, try pulling it first'
                return JSONResponse({"error": {"message": message, "type": "api_error"}}, 404)
            answer = {"role": "assistant", "content": "네."}
            return JSONResponse({"model": body["model"], "choices": [{"index": 0, "message": answer}]})


def test_ollama_context_and_missing_models(tmp_path: Path) -> None:
    fake = OllamaLike()
    with serve(fake.app) as ollama:
        port = int(ollama.rsplit(":", 1)[1])

        def orchestrator(model: str) -> Any:
            settings = OrchestratorSettings(
                llm_service_type="ollama",
                ollama_host="127.0.0.1",
                ollama_port=port,
                llm_model_name=model,
                llm_fallback="none",
                sdc_data_dir=tmp_path / "data",
            )
            return serve(create_app(settings))

        with orchestrator("gemma2:9b") as base:
            ok = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕", "use_rag": False}, timeout=30)
            assert ok.status_code == 200, ok.text
            # num_ctx 4096 from /api/show: the default 2048 fits beside this prompt; 5000 never can.
            assert fake.chats[-1]["max_tokens"] == 2048
            too_long = httpx.post(
                f"{base}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "안녕"}], "max_tokens": 4096},
                timeout=30,
            )
            assert too_long.status_code == 400 and "context of 4096 tokens" in too_long.text, too_long.text
        with orchestrator("gemma2:27b") as base:
            missing = httpx.post(f"{base}/api/v1/chat", json={"message": "안녕", "use_rag": False}, timeout=30)
            assert missing.status_code == 404, missing.text
            message = missing.json()["error"]["message"]
            assert "model 'gemma2:27b' is not on Ollama endpoint env/ollama" in message
            assert "the tags it has: gemma2:9b, llama3.1:8b" in message


def test_the_shadow_copy_is_fitted_too(gemma: tuple[GemmaOnVllm, str], tmp_path: Path) -> None:
    """The runbook's phase 0: Gemini answers, every chat is copied to Gemma 2 on vLLM, which refuses system turns."""
    import time

    from tests.support.fake_openai import FakeBackend

    fake, base = gemma
    gemini = FakeBackend("gemini-x", answer="서울입니다.")
    with serve(gemini.app) as gemini_url:
        settings = OrchestratorSettings(
            llm_service_type="gemini",
            vllm_host="127.0.0.1",
            vllm_port=int(base.rsplit(":", 1)[1]),
            gemini_api_key="k",
            gemini_base_url=gemini_url + "/v1",
            gemini_model_name="gemini-x",
            llm_fallback="none",
            sdc_shadow_provider="vllm",
            sdc_shadow_keep_texts=5,
            sdc_shadow_text_chars=3,
            sdc_data_dir=tmp_path / "data",
        )
        with serve(create_app(settings)) as orch:
            resp = httpx.post(f"{orch}/api/v1/chat", json={"message": "수도는?", "use_rag": False}, timeout=30)
            assert resp.status_code == 200 and resp.json()["provider"] == "gemini", resp.text
            deadline = time.monotonic() + 10
            while (report := httpx.get(f"{orch}/api/v1/shadow/report").json())["pairs"] < 1:
                assert time.monotonic() < deadline, report
                time.sleep(0.1)
    assert report["outcomes"] == {"compared": 1}
    (kept,) = report["texts"]  # opt-in, bounded: the question's end and both answers, 3 characters each
    assert (kept["question"], kept["primary_text"], kept["shadow_text"]) == ("도는?", "서울입", "서울입")
    assert kept["primary"] == "gemini:gemini-x" and kept["shadow"] == f"vllm:{SERVED}"
    assert [m["role"] for m in fake.chats[-1]["messages"]] == ["user"]


class NativeOllama:
    """An Ollama the team runs itself: no num_ctx on the model, its own /api/chat (JSON lines when streaming)."""

    def __init__(self) -> None:
        self.native: list[dict[str, Any]] = []
        self.openai = 0
        self.app = FastAPI()

        @self.app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "gemma2:9b"}]}

        @self.app.post("/api/show")
        async def show() -> dict[str, Any]:
            return {"parameters": "stop <end_of_turn>", "model_info": {"gemma2.context_length": 8192}}

        @self.app.post("/v1/chat/completions")
        async def openai_chat() -> Response:
            self.openai += 1
            return JSONResponse({"error": {"message": "this test wants /api/chat"}}, 500)

        @self.app.post("/api/chat")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.native.append(body)
            last = {"model": body["model"], "done": True, "done_reason": "stop", "prompt_eval_count": 9}
            if not body["stream"]:
                return JSONResponse(
                    {**last, "message": {"role": "assistant", "content": "서울입니다."}, "eval_count": 3}
                )

            async def lines() -> Iterator[str]:  # type: ignore[misc]
                for piece in ("서울", "입니다."):
                    yield json.dumps({"model": body["model"], "message": {"content": piece}, "done": False}) + "\n"
                yield json.dumps({**last, "message": {"content": ""}, "eval_count": 2}) + "\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")


def test_the_seeds_own_ollama_gets_the_guides_context(tmp_path: Path) -> None:
    fake = NativeOllama()
    with serve(fake.app) as ollama:
        settings = OrchestratorSettings(
            llm_service_type="ollama",
            ollama_host="127.0.0.1",
            ollama_port=int(ollama.rsplit(":", 1)[1]),
            llm_model_name="gemma2:9b",
            llm_fallback="none",
            sdc_data_dir=tmp_path / "data",
        )
        with serve(create_app(settings)) as base:
            plain = httpx.post(f"{base}/api/v1/chat", json={"message": "수도는?", "use_rag": False}, timeout=30)
            assert plain.status_code == 200 and plain.json()["response"] == "서울입니다.", plain.text
            sent = fake.native[-1]
            assert sent["options"]["num_ctx"] == 8192 and sent["options"]["temperature"] == 0.3
            assert sent["options"]["num_predict"] == 2048 and sent["model"] == "gemma2:9b"
            streamed = httpx.post(
                f"{base}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "수도는?"}], "stream": True, "max_tokens": 50},
                timeout=30,
            )
            events = [json.loads(x[6:]) for x in streamed.text.split("\n\n") if x.startswith("data: {")]
            assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "서울입니다."
            assert events[-1]["choices"][0]["finish_reason"] == "stop" and streamed.text.rstrip().endswith("[DONE]")
            assert fake.native[-1]["options"] == {"num_ctx": 8192, "temperature": 0.3, "top_p": 0.8, "num_predict": 50}
    assert fake.openai == 0
