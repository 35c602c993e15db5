"""Fit each request to the model that will serve it: name, chat template, context.

The seed's defaults were made for one model: max_tokens 2048 on Gemma 2's
8192-token context, a system message, the bare name `gemma-2-9b-it`. Sent as
they are to a model with a 2048-token context (the guide's KULLM, KoAlpaca) or
to Gemma 2 served under its Hugging Face name, every call fails. So, per
endpoint, learned once from the backend and cached:

- the served name: a configured `gemma-2-9b-it` finds `google/gemma-2-9b-it`
  (`resolve_name`: the last path segment, case-insensitive);
- the context length: vLLM's and sdc-runtime's /v1/models entry
  (`max_model_len`), Ollama's `num_ctx` from its show API; the seed's own
  Ollama without one gets OLLAMA_NUM_CTX (8192, the seed's and the operator's
  figure) through Ollama's native chat API (ollama_native.py);
- the chat template's rules (chat_template.py): sdc-runtime's entry states
  them; vLLM's refusal names them and the request goes once more, folded.

Then each request, just before it goes to an endpoint: a max_tokens the caller
left to the default is clamped to what the prompt leaves; one the caller chose
that cannot fit is a 400 saying so; retrieved passages are dropped, the least
relevant first, before the orchestrator gives up. Prompt sizes: an upper bound
(UTF-8 bytes, as no byte-level or byte-fallback tokenizer makes more tokens
than bytes, plus room for the template) decides without a call when the prompt
surely fits; otherwise the backend counts exactly (`POST /tokenize`, vLLM's,
which sdc-runtime serves too). Ollama has no such route and never refuses a
long prompt (it truncates), so its prompts are only estimated; an estimate
clamps a defaulted max_tokens but never refuses a request (only a max_tokens
the whole context cannot hold), nor drops passages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sdc_orchestrator import chat_template
from sdc_orchestrator.backends import Endpoint

log = logging.getLogger("sdc_orchestrator.fitting")

PER_MESSAGE_TOKENS = 64  # a chat template's own text around one message: generous, so "surely fits" is sure
PER_CHAT_TOKENS = 64
MIN_ANSWER_TOKENS = 256  # a defaulted answer shorter than this drops passages first, if there are any
LEARN_RETRY_S = 30.0  # a backend whose /v1/models failed is asked again after this long
EXACT_COUNT_PROVIDERS = ("vllm", "transformers")  # serve POST /tokenize


class FitError(Exception):
    """The request cannot fit the model's context: the client's to change (400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": "invalid_request_error", "code": self.status}}


@dataclass
class FitHints:
    """What the route knows about its request: which limits the caller chose, how to drop passages."""

    defaulted_max_tokens: bool = False
    passages: int = 0  # retrieved passages in the messages, best first
    rebuild: Callable[[int], list[dict[str, Any]]] | None = None  # the messages with the best n passages
    passages_used: int | None = None  # set when passages were dropped to fit


@dataclass
class Profile:
    """What one endpoint's backend told about its model."""

    ids: list[str] = field(default_factory=list)
    max_model_len: int | None = None
    system_role: bool = True
    alternate_roles: bool = False
    learned_at: float = 0.0
    failed: bool = False
    ollama_num_ctx: int | None = None  # set: chats go to Ollama's /api/chat with this num_ctx (ollama_native.py)


def resolve_name(wanted: str, served: list[str]) -> str | None:
    """The served id a client's model name means: itself, else the one whose last path segment matches.

    `gemma-2-9b-it` finds `google/gemma-2-9b-it` (case-insensitive); two candidates are ambiguous (None).
    """
    if wanted in served:
        return wanted
    tail = wanted.rsplit("/", 1)[-1].lower()
    found = [s for s in served if s.rsplit("/", 1)[-1].lower() == tail]
    return found[0] if len(found) == 1 else None


def utf8_upper_bound(messages: list[dict[str, Any]]) -> int:
    """More tokens than the chat can be: content bytes plus generous template room."""
    size = PER_CHAT_TOKENS
    for m in messages:
        content = m.get("content")
        size += PER_MESSAGE_TOKENS + len(str(content if content is not None else "").encode())
    return size


def _root(base_url: str) -> str:
    """The server root of an OpenAI base URL (vLLM's /tokenize and Ollama's /api live there)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


class Fitter:
    def __init__(
        self,
        http: Callable[[], aiohttp.ClientSession],
        headers: Callable[[Endpoint], dict[str, str]],
        *,
        timeout_s: float = 3.0,
        ollama_num_ctx: int = 8192,
    ) -> None:
        self._http = http
        self.ollama_num_ctx = ollama_num_ctx
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._profiles: dict[str, Profile] = {}
        self._lessons: dict[str, asyncio.Future[Profile]] = {}  # profiles being learned, one per endpoint

    # -- learning -------------------------------------------------------------------------
    async def profile(self, endpoint: Endpoint, model: str | None = None) -> Profile:
        """The endpoint's profile, learned on first use (Gemini: nothing to learn, nothing asked).

        One lesson per endpoint at a time: the requests held for a model at zero all reach its new replica
        at once, and each asking its /v1/models before its chat put dozens of requests in front of the
        first prefill. The others await the one lesson (shielded: a client that leaves does not end it)."""
        known = self._profiles.get(endpoint.name)
        if known is not None and not (known.failed and time.monotonic() - known.learned_at > LEARN_RETRY_S):
            return known
        lesson = self._lessons.get(endpoint.name)
        if lesson is None:
            lesson = self._lessons[endpoint.name] = asyncio.ensure_future(self._learn_profile(endpoint, model))
            lesson.add_done_callback(lambda _: self._lessons.pop(endpoint.name, None))
        return await asyncio.shield(lesson)

    async def _learn_profile(self, endpoint: Endpoint, model: str | None) -> Profile:
        profile = Profile(learned_at=time.monotonic())
        if endpoint.provider != "gemini":
            try:
                await self._learn(endpoint, model or endpoint.model, profile)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError, AttributeError) as err:
                log.warning("learning the model of %s failed: %s: %s", endpoint.name, type(err).__name__, err)
                profile.failed = True
        known = self._profiles.get(endpoint.name)
        if known is not None and not known.system_role:  # a refusal learned meanwhile stays learned
            profile.system_role = False
        if known is not None and known.alternate_roles:
            profile.alternate_roles = True
        self._profiles[endpoint.name] = profile
        return profile

    async def _learn(self, endpoint: Endpoint, model: str | None, profile: Profile) -> None:
        async with self._http().get(
            f"{endpoint.base_url}/models", headers=self._headers(endpoint), timeout=self._timeout
        ) as resp:
            if resp.status >= 400:
                return  # no /v1/models: nothing learned, requests go as they are
            data = await resp.json(content_type=None)
        entries = [e for e in data.get("data") or [] if isinstance(e, dict) and e.get("id")]
        profile.ids = [str(e["id"]) for e in entries]
        name = resolve_name(model, profile.ids) if model else (profile.ids[0] if profile.ids else None)
        entry = next((e for e in entries if e["id"] == name), entries[0] if entries else {})
        if isinstance(entry.get("max_model_len"), int) and entry["max_model_len"] > 0:
            profile.max_model_len = entry["max_model_len"]
        rules = entry.get("template_rules")
        if isinstance(rules, dict):
            profile.system_role = rules.get("system_role") is not False
            profile.alternate_roles = rules.get("alternate_roles") is True
        if endpoint.provider == "ollama" and name and profile.max_model_len is None:
            shown, num_ctx = await self._ollama_num_ctx(endpoint, name)
            profile.max_model_len = num_ctx
            # The seed's own Ollama (no operator set OLLAMA_CONTEXT_LENGTH on it), a model without num_ctx:
            # its default context would be 2048-4096, so chats carry the seed's num_ctx themselves.
            if shown and num_ctx is None and endpoint.namespace is None and endpoint.name.startswith("env/"):
                profile.ollama_num_ctx = profile.max_model_len = self.ollama_num_ctx

    async def _ollama_num_ctx(self, endpoint: Endpoint, name: str) -> tuple[bool, int | None]:
        """Whether /api/show answered (a real Ollama), and the model's `num_ctx` PARAMETER if it has one."""
        async with self._http().post(
            f"{_root(endpoint.base_url)}/api/show", json={"model": name}, timeout=self._timeout
        ) as resp:
            if resp.status >= 400:
                return False, None
            data = await resp.json(content_type=None)
        found = _NUM_CTX.search(str(data.get("parameters") or ""))
        return True, (int(found.group(1)) if found else None)

    def native_ollama(self, endpoint: Endpoint) -> tuple[str, int] | None:
        """(URL, num_ctx) of Ollama's /api/chat when this endpoint's chats go there, else None."""
        profile = self._profiles.get(endpoint.name)
        if profile is None or profile.ollama_num_ctx is None:
            return None
        return f"{_root(endpoint.base_url)}/api/chat", profile.ollama_num_ctx

    async def served_name(self, endpoint: Endpoint, wanted: str) -> str:
        """The configured model name as the backend serves it (the name rule), else unchanged."""
        if endpoint.provider == "gemini":
            return wanted
        profile = await self.profile(endpoint, wanted)
        return resolve_name(wanted, profile.ids) or wanted

    def missing_model(self, endpoint: Endpoint, model: object, status: int | None, error_body: object) -> Any:
        """Ollama's 404 for a model it has not pulled, as the client's error naming the tags it has; else None.

        Not an outage to fail over from: the name (LLM_MODEL_NAME, or the request's) is wrong, or the
        model still has to be pulled. The endpoint's list is learned again on the next request.
        """
        if endpoint.provider != "ollama" or status != 404 or "not found" not in str(error_body).lower():
            return None
        known = self._profiles.pop(endpoint.name, None)
        tags = ", ".join(known.ids) if known and known.ids else "none"
        message = (
            f"model '{model}' is not on Ollama endpoint {endpoint.name}; the tags it has: {tags} "
            f"(pull it with `ollama pull {model}`, or set LLM_MODEL_NAME to one of them)"
        )
        return {"error": {"message": message, "type": "invalid_request_error", "code": 404}}

    def learn_refusal(self, endpoint: Endpoint, body: dict[str, Any], error_body: object) -> dict[str, Any] | None:
        """After a backend's error: the body to send once more, when the error names a template rule."""
        rule = chat_template.refusal(error_body)
        if rule is None or not isinstance(body.get("messages"), list):
            return None
        profile = self._profiles.setdefault(endpoint.name, Profile(learned_at=time.monotonic()))
        if rule == "system_role":
            profile.system_role = False
        else:
            profile.alternate_roles = True
        log.info("%s: the chat template refuses %s; folding", endpoint.name, rule)
        folded = self._fold(body["messages"], profile)
        return {**body, "messages": folded} if folded != body["messages"] else None

    @staticmethod
    def _fold(messages: list[dict[str, Any]], profile: Profile) -> list[dict[str, Any]]:
        if profile.system_role and not profile.alternate_roles:
            return messages
        return chat_template.fold(messages, system_role=profile.system_role, alternate_roles=profile.alternate_roles)

    # -- fitting ---------------------------------------------------------------------------------
    async def fit(self, endpoint: Endpoint, body: dict[str, Any], hints: FitHints | None) -> dict[str, Any]:
        """`body` shaped for this endpoint's template and clamped to its context; FitError when it cannot fit."""
        hints = hints or FitHints()
        profile = await self.profile(endpoint, body.get("model"))
        if not isinstance(body.get("messages"), list):
            return body
        body = {**body, "messages": self._fold(body["messages"], profile)}
        context = profile.max_model_len
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        wanted = body.get(key)
        if context is None or not isinstance(wanted, int):
            return body
        if utf8_upper_bound(body["messages"]) + wanted <= context:
            return body  # surely fits: no call
        passages = hints.passages
        while True:
            prompt, exact = await self._count(endpoint, body, profile)
            room = context - prompt
            enough = room >= wanted or (hints.defaulted_max_tokens and room >= min(wanted, MIN_ANSWER_TOKENS))
            if enough or not exact or hints.rebuild is None or passages <= 1:
                break
            passages -= 1  # the least relevant passage goes first; the best one always stays
            body = {**body, "messages": self._fold(hints.rebuild(passages), profile)}
        if passages != hints.passages:
            hints.passages_used = passages
        model = body.get("model") or endpoint.model or endpoint.name
        if not exact:  # an estimate (Ollama, or no count to be had): it clamps where it can, never refuses a prompt
            if not hints.defaulted_max_tokens and wanted >= context:
                raise FitError(f"{key} {wanted} cannot fit: model '{model}' serves a context of {context} tokens")
            if hints.defaulted_max_tokens and 1 <= room < wanted:
                body[key] = room
            return body
        if room >= wanted or (hints.defaulted_max_tokens and room >= 1):
            if room < wanted:
                body[key] = room
            return body
        if hints.defaulted_max_tokens:
            raise FitError(
                f"the prompt is {prompt} tokens, which leaves no room for an answer in the context of "
                f"{context} tokens that model '{model}' serves; send a shorter message"
            )
        raise FitError(
            f"{key} {wanted} cannot fit: the prompt is {prompt} tokens and model '{model}' serves a context of "
            f"{context} tokens, so at most {max(context - prompt, 0)} tokens can be asked for"
        )

    async def _count(self, endpoint: Endpoint, body: dict[str, Any], profile: Profile) -> tuple[int, bool]:
        """The prompt's tokens and whether they were counted: by the backend where it can (vLLM, sdc-runtime)."""
        if endpoint.provider not in EXACT_COUNT_PROVIDERS:
            return utf8_upper_bound(body["messages"]) // 2, False  # Ollama has no count and truncates anyway
        for _ in range(2):
            request = {"model": body.get("model"), "messages": body["messages"], "add_generation_prompt": True}
            try:
                async with self._http().post(
                    f"{_root(endpoint.base_url)}/tokenize",
                    json=request,
                    headers=self._headers(endpoint),
                    timeout=self._timeout,
                ) as resp:
                    data = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                log.warning("counting tokens on %s failed: %s: %s", endpoint.name, type(err).__name__, err)
                break
            if status < 400 and isinstance(data, dict) and isinstance(data.get("count"), int):
                return int(data["count"]), True
            folded = self.learn_refusal(endpoint, body, data) if status < 500 else None
            if folded is None:
                break
            body["messages"] = folded["messages"]
        return utf8_upper_bound(body["messages"]), False
