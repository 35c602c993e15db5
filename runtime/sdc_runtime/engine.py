"""Continuous batching over one Transformers model, fed from many async requests: the engine's API.

Why our own decode loop instead of `model.generate`: `generate` runs a batch from start to end, so a
request that arrives while long ones decode waits for all of them (static batching). Here one
scheduler thread owns the model and runs one step at a time over whatever rows are live. The parts,
at vLLM's seams:

- `engine.py` (this module): loading, the model's limits, prompts, `submit` and embeddings;
- `request.py`: `Generation` (what a caller iterates), the row the thread keeps, the request errors;
- `outbox.py`: the hand-off of a row's text from the thread to its event loop, woken at most once
  per batch of pieces, and not at all per token for an answer sent whole;
- `scheduler.py`: the bounded admission queue and the engine loop (the thread);
- `batch.py`: rows joining (prefill), decoding and leaving;
- `kv_cache.py` and `prefix_cache.py`: the batch's left-padded KV cache and the reusable prompt blocks;
- `sampling.py`: per-row settings and the choice of each next token;
- `prompt.py`: chats turned into token ids, messages kept text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdc_runtime import metrics
from sdc_runtime.batch import Batch
from sdc_runtime.detok import Detokenizer, StopMatcher
from sdc_runtime.loading import LoadOptionError, LoadOptions, LoadPlan, from_pretrained_kwargs, plan_load
from sdc_runtime.outbox import Outbox
from sdc_runtime.prefix_cache import PrefixCache
from sdc_runtime.prompt import ChatTokenizer
from sdc_runtime.request import BadPromptError, Generation, PromptTooLongError, QueueFullError, Row
from sdc_runtime.sampling import SamplingParams
from sdc_runtime.scheduler import Scheduler

# Importable from here as before the split (the server, model_info and tests import them from the engine).
__all__ = [
    "BadPromptError",
    "Engine",
    "Generation",
    "ModelDirError",
    "Outbox",
    "PromptTooLongError",
    "QueueFullError",
    "SamplingParams",
    "validate_model_dir",
]

log = logging.getLogger("sdc_runtime.engine")

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


class ModelDirError(Exception):
    """The model directory is missing or unusable; the message says what to fix."""


def validate_model_dir(model_dir: Path) -> dict[str, Any]:
    """Refuse a missing or corrupt directory before anything loads."""
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{config_file} is missing: {model_dir} is not a Transformers model directory")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{config_file} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ModelDirError(f"{config_file} is not a JSON object")
    if not any(any(model_dir.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelDirError(f"{model_dir} has no weights (*.safetensors)")
    return config


class Engine:
    def __init__(
        self,
        model_dir: Path,
        *,
        options: LoadOptions | None = None,
        max_batch: int = 32,
        max_queue: int = 256,
        max_prefill_tokens: int = 8192,
        max_model_len: int | None = None,
        chat_template: str | None = None,
        prefix_cache_tokens: int = 4096,
        served_model_name: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.max_model_len = max_model_len  # LocalLLM engine.maxModelLen: a shorter context than the model's
        self.chat_template = chat_template  # replaces the tokenizer's (models trained on a format they do not ship)
        self.config = validate_model_dir(model_dir)
        self.options = options or LoadOptions()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self.stats = metrics.ModelMetrics.of(served_model_name or model_dir.name)
        self.loaded = threading.Event()
        self.scheduler = Scheduler(
            self.stats, max_batch=max_batch, max_queue=max_queue, max_prefill_tokens=max_prefill_tokens
        )
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self.plan: LoadPlan | None = None
        self.max_token_chars = 64
        self._prompts: ChatTokenizer | None = None
        self.is_generative = any(a.endswith("ForCausalLM") for a in self.config.get("architectures", []))

    # -- loading -----------------------------------------------------------
    def load(self) -> None:
        """Load the weights (blocking) as `loading.plan_load` decides, then start the scheduler."""
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        cuda = torch.cuda.is_available()
        try:
            plan = plan_load(self.options, cuda_available=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported())
            kwargs = from_pretrained_kwargs(plan)
            self.plan = plan
        except LoadOptionError as err:
            raise ModelDirError(str(err)) from err
        try:
            cls = AutoModelForCausalLM if self.is_generative else AutoModel
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=plan.trust_remote_code)
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            if self.chat_template:
                self.tokenizer.chat_template = self.chat_template
            model: Any = cls.from_pretrained(self.model_dir, **kwargs)
            if plan.on_gpu and plan.device_map is None:
                model = model.to("cuda")
            self.model = model.eval()
        except Exception as err:
            raise ModelDirError(f"cannot load model from {self.model_dir}: {err}") from err
        # Inputs go where the embeddings live (with a device map, accelerate's hooks move the rest).
        self.device = self.model.get_input_embeddings().weight.device
        self._prompts = ChatTokenizer(self.tokenizer)
        vocab = self.tokenizer.get_vocab()
        self.max_token_chars = max((len(t) for t in vocab), default=64) or 64
        log.info(
            "model loaded from %s in %.2fs (%s, device map %s, %s)",
            self.model_dir,
            time.monotonic() - started,
            plan.dtype,
            getattr(self.model, "hf_device_map", None) or plan.device_map,
            "gpu" if plan.on_gpu else "cpu",
        )
        if self.is_generative:
            self._warm_up()
        self.loaded.set()
        if self.is_generative:
            self.scheduler.start(self._new_batch(), self.max_batch * self.context_limit)

    def _new_batch(self) -> Batch:
        eos = set(_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
        eos |= set(_as_list(self.tokenizer.eos_token_id))
        pad = self.tokenizer.pad_token_id
        return Batch(self.model, self.device, self.prefix_cache, self.stats, eos, 0 if pad is None else int(pad))

    @property
    def running(self) -> int:
        """Rows in the batch (read by tests and metrics)."""
        return self.scheduler.running

    @property
    def steps(self) -> int:
        """Decode steps run so far."""
        return 0 if self.scheduler.batch is None else self.scheduler.batch.steps

    @property
    def reused_slots(self) -> int:
        """Newcomers placed in an ended row's slot (read by tests)."""
        return 0 if self.scheduler.batch is None else self.scheduler.batch.reused_slots

    @property
    def joinable(self) -> bool:
        """Whether new rows join a running batch (false for caches padding cannot merge)."""
        return self.scheduler.batch is None or self.scheduler.batch.joinable

    def _warm_up(self) -> None:
        """One short forward pass before /health says loaded: torch's lazy set-up (kernels, thread pools,
        the allocator) and the chat template's compilation are paid here, not by the first request. On a
        scale from zero (#24) that first request is all the held ones: measured on the real node, the first
        token came 2.5 s after the orchestrator could route to a fresh pod, 0.2-0.6 s once it had served."""
        import torch

        started = time.monotonic()
        try:
            ids = self.chat_prompt([{"role": "user", "content": "warm-up"}])[:16] or [0]
            with torch.inference_mode():
                self.model(input_ids=torch.tensor([ids], device=self.device))
        except Exception as err:  # a failed warm-up costs only the warmth, never the load
            log.warning("warm-up skipped: %s", err)
            return
        log.info("warmed up in %.2fs", time.monotonic() - started)

    @property
    def context_limit(self) -> int:
        limit = self.config.get("max_position_embeddings") or getattr(self.tokenizer, "model_max_length", None)
        own = int(limit or 2048)
        return min(own, self.max_model_len) if self.max_model_len else own

    # -- requests ------------------------------------------------------------
    def check_text_size(self, chars: int, max_tokens: int) -> None:
        """Refuse text that cannot fit before tokenizing it (tokenizing megabytes takes seconds).

        No token of the vocabulary covers more than `max_token_chars` characters, so `chars` characters
        are at least `chars / max_token_chars` tokens: a sound lower bound for any tokenizer.
        """
        if chars / self.max_token_chars + max_tokens > self.context_limit:
            raise PromptTooLongError(
                f"the messages are {chars} characters, more than the model's context limit of "
                f"{self.context_limit} tokens can hold with max_tokens {max_tokens}"
            )

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the chat, with message contents tokenized as plain text (`prompt.py`)."""
        if self._prompts is None:
            raise RuntimeError("the model is not loaded yet")
        return self._prompts.ids(messages)

    def check_budget(self, prompt_ids: Sequence[int], max_tokens: int) -> None:
        if len(prompt_ids) + max_tokens > self.context_limit:
            raise PromptTooLongError(
                f"prompt is {len(prompt_ids)} tokens and max_tokens is {max_tokens}: together they exceed "
                f"the model's context limit of {self.context_limit} tokens"
            )

    def submit(self, prompt_ids: list[int], params: SamplingParams, *, stream: bool = True) -> Generation:
        """Queue a generation; raises at once when it cannot fit or the queue is full.

        With `stream=False` the whole text arrives as one delta when the row ends: a caller that
        answers once saves the scheduler thread a hand-off to the event loop per token.
        """
        self.check_budget(prompt_ids, params.max_tokens)
        row = Row(
            prompt_ids,
            params,
            Outbox(asyncio.get_running_loop()),
            Detokenizer(self.tokenizer),
            StopMatcher(params.stop),
            streamed=stream,
        )
        self.scheduler.admit(row)
        return Generation(row)

    async def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        return await asyncio.to_thread(self._embed_sync, list(texts))

    def _embed_sync(self, texts: list[str]) -> tuple[list[list[float]], int]:
        import torch

        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), 32):  # bounded activations whatever the request size
            batch = self.tokenizer(
                texts[start : start + 32],
                padding=True,
                truncation=True,
                max_length=self.context_limit,
                return_tensors="pt",
                split_special_tokens=True,
            ).to(self.device)
            with torch.inference_mode():
                out = self.model(**batch, output_hidden_states=True)
            hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            vectors += torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().tolist()
            tokens += int(batch["attention_mask"].sum())
        return vectors, tokens


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
