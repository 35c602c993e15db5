"""What sdc-runtime tells a client about its model: context, template rules, token counts, template refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdc_runtime.engine import Engine
from sdc_runtime.main import parser
from sdc_runtime.server import create_app

from tests.support.servers import serve

pytest.importorskip("torch")
pytestmark = pytest.mark.runtime

KOALPACA = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '### 질문: ' + m['content'] + '\\n\\n' }}"
    "{% elif m['role'] == 'assistant' %}{{ '### 답변: ' + m['content'] + '\\n\\n' }}"
    "{% else %}{{ m['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### 답변:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdc_runtime.tiny import GEMMA2_CHAT_TEMPLATE, make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("g") / "gemma", max_positions=2048, chat_template=GEMMA2_CHAT_TEMPLATE
    )


def served(model_dir: Path, **engine_args: Any) -> Iterator[str]:
    engine = Engine(model_dir, max_batch=2, **engine_args)
    engine.load()
    with serve(create_app(engine, "google/gemma-2-9b-it")) as url:
        yield url


@pytest.fixture(scope="module")
def gemma(gemma_dir: Path) -> Iterator[str]:
    yield from served(gemma_dir)


def test_models_entry_has_context_and_template_rules(gemma: str) -> None:
    (entry,) = httpx.get(f"{gemma}/v1/models").json()["data"]
    assert entry["id"] == "google/gemma-2-9b-it" and entry["max_model_len"] == 2048
    assert entry["template_rules"] == {"system_role": False, "alternate_roles": True}


def test_a_template_refusal_is_a_400_naming_it(gemma: str) -> None:
    for messages, words in (
        ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "System role not supported"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
    ):
        for path in ("/v1/chat/completions", "/tokenize"):
            resp = httpx.post(
                f"{gemma}{path}", json={"model": "google/gemma-2-9b-it", "messages": messages, "max_tokens": 4}
            )
            assert resp.status_code == 400, (path, resp.text)
            message = resp.json()["error"]["message"]
            assert message.startswith("the model's chat template refused the messages") and words in message


def test_tokenize_counts_like_the_chat(gemma: str) -> None:
    messages = [{"role": "user", "content": "서울은 대한민국의 수도입니다."}]
    counted = httpx.post(f"{gemma}/tokenize", json={"messages": messages}).json()
    chat = httpx.post(
        f"{gemma}/v1/chat/completions", json={"model": "google/gemma-2-9b-it", "messages": messages, "max_tokens": 2}
    ).json()
    assert counted["count"] == chat["usage"]["prompt_tokens"] == len(counted["tokens"])
    assert counted["max_model_len"] == 2048


def test_max_model_len_and_chat_template_replace_the_models(gemma_dir: Path) -> None:
    for url in served(gemma_dir, max_model_len=1024, chat_template=KOALPACA):
        (entry,) = httpx.get(f"{url}/v1/models").json()["data"]
        assert entry["max_model_len"] == 1024
        assert entry["template_rules"] == {"system_role": True, "alternate_roles": False}
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        resp = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "google/gemma-2-9b-it", "messages": messages, "max_tokens": 1020},
        )
        assert resp.status_code == 400 and "context limit of 1024 tokens" in resp.text, resp.text


def test_flags() -> None:
    args = parser().parse_args(["--model", "m", "--max-model-len", "2048", "--chat-template", KOALPACA])
    assert args.max_model_len == 2048 and args.chat_template == KOALPACA
