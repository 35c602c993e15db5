from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sdc_orchestrator.app import create_app
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.fake_openai import FakeBackend
from tests.support.servers import serve


@pytest.fixture
def backends() -> Iterator[dict[str, tuple[FakeBackend, str]]]:
    """Three fake backends on loopback: vllm, ollama and a stand-in for Gemini's OpenAI endpoint."""
    with ExitStack() as stack:
        out = {}
        for name, model in (("vllm", "google/gemma-2-9b-it"), ("ollama", "gemma2:9b"), ("gemini", "gemini-x")):
            fake = FakeBackend(model, answer=f"{name} 답변: 서울은 대한민국의 수도입니다.")
            out[name] = (fake, stack.enter_context(serve(fake.app)))
        yield out


@pytest.fixture
def orchestrator(orchestrator_app: Callable[..., tuple[str, FastAPI]]) -> Callable[..., str]:
    """Start an orchestrator with the seed's variables pointing at the fakes; returns its base URL."""
    return lambda **env: orchestrator_app(**env)[0]


@pytest.fixture
def orchestrator_app(
    tmp_path: Path, backends: dict[str, tuple[FakeBackend, str]]
) -> Iterator[Callable[..., tuple[str, FastAPI]]]:
    """The same, returning the app too, for tests that look at its router."""
    with ExitStack() as stack:

        def start(**env: Any) -> tuple[str, FastAPI]:
            vllm_port = int(backends["vllm"][1].rsplit(":", 1)[1])
            settings: dict[str, Any] = {
                "llm_service_type": "vllm",
                "vllm_host": "127.0.0.1",
                "vllm_port": vllm_port,
                "gemini_api_key": "test-key",
                "gemini_base_url": backends["gemini"][1] + "/v1",
                "gemini_model_name": "gemini-x",
                "sdc_data_dir": tmp_path / "data",
                "sdc_attempt_timeout_s": 2.0,
                "sdc_total_timeout_s": 6.0,
                "sdc_cooldown_s": 5.0,
            }
            settings.update(env)
            app = create_app(OrchestratorSettings(**settings))
            return stack.enter_context(serve(app)), app

        yield start
