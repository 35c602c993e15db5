"""What a client can learn about the served model before it sends a chat.

A client that fits requests to the model (the orchestrator does) needs three
facts no OpenAI route gives: the context length, what the chat template
accepts, and how many tokens a chat really is. vLLM answers the first in its
`/v1/models` entry (`max_model_len`) and the last at `POST /tokenize`; this
module gives sdc-runtime the same shapes, so one client serves both. The
template's rules are ours (vLLM has no way to say them): Gemma 2's template,
for one, raises on a system turn and on two user turns in a row, and a client
that knows it folds the system text into the first user turn instead of
learning it from a refused request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from sdc_runtime.engine import BadPromptError, Engine
from sdc_runtime.protocol import ChatMessage


class TemplateRefusedError(BadPromptError):
    """The model's chat template raised on these messages (e.g. 'System role not supported')."""


def render_error(err: Exception) -> TemplateRefusedError:
    return TemplateRefusedError(f"the model's chat template refused the messages: {err}")


def template_rules(tokenizer: Any) -> dict[str, bool]:
    """Probe the template once: does it take a system turn, and does it need user/assistant alternation?

    Probed by rendering two tiny chats; a template without a rule renders both. A tokenizer with
    no template takes anything (the runtime's plain `role: text` fallback).
    """
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        return {"system_role": True, "alternate_roles": False}

    def renders(messages: list[dict[str, str]]) -> bool:
        try:
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except TemplateError:
            return False
        return True

    return {
        "system_role": renders([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
        "alternate_roles": not renders([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    }


class TokenizeRequest(BaseModel):
    """vLLM's `POST /tokenize` body for a chat (the `prompt` form is not served here)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=512)
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    add_generation_prompt: bool = True


class ModelInfo:
    """The facts above for one engine; the template's rules are probed once, after loading."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._rules: dict[str, bool] | None = None

    def entry_fields(self) -> dict[str, Any]:
        """Fields added to the /v1/models entry (vLLM's `max_model_len`, our `template_rules`)."""
        if not self.engine.loaded.is_set() or not self.engine.is_generative:
            return {"max_model_len": self.engine.context_limit}
        if self._rules is None:
            self._rules = template_rules(self.engine.tokenizer)
        return {"max_model_len": self.engine.context_limit, "template_rules": self._rules}


def add_tokenize_route(app: FastAPI, engine: Engine, require_ready: Any, error: Any) -> None:
    """`POST /tokenize` like vLLM's: the chat's prompt tokens after the template, and the context length."""

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> Any:
        require_ready(body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        chars = sum(len(m["content"]) for m in messages)
        try:
            engine.check_text_size(chars, 0)
            ids = await asyncio.to_thread(chat_prompt, engine, messages)
        except BadPromptError as err:
            return error(400, str(err), "invalid_request_error", "messages")
        return {"count": len(ids), "max_model_len": engine.context_limit, "tokens": ids}


def chat_prompt(engine: Engine, messages: list[dict[str, str]]) -> list[int]:
    """`Engine.chat_prompt`, with a template's own refusal as a BadPromptError (a 400, not a 500)."""
    from jinja2 import TemplateError

    try:
        return engine.chat_prompt(messages)
    except TemplateError as err:
        raise render_error(err) from None
