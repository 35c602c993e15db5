"""Batched generation over one Transformers model, fed from many async requests.

Why a scheduler thread: `model.generate` is blocking and holds the GIL-free
torch kernels for the whole decode, so it must run off the event loop; and on
both CPU and GPU one batched forward pass of N sequences costs far less than N
passes. The scheduler takes the first waiting request, gathers the compatible
ones that arrive within a few milliseconds (same sampling settings, no fixed
seed), and decodes them together with left padding. Each row stops on its own
(end of sequence, its own token budget, a stop string, or a cancelled client)
through a per-row stopping criterion, and its tokens stream to its own asyncio
queue, so outputs never interleave. Requests that arrive during a batch wait
for the next one: static batching, simpler than continuous batching and
enough for the models this runtime is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdc_runtime import metrics

log = logging.getLogger("sdc_runtime.engine")

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


class ModelDirError(Exception):
    """The model directory is missing or unusable; the message says what to fix."""


class PromptTooLongError(ValueError):
    """The prompt plus the requested tokens exceed the model's context."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def batch_key(self) -> tuple[float, float, bool] | None:
        """Requests with equal keys may share a batch; a fixed seed runs alone."""
        return None if self.seed is not None else (self.temperature, self.top_p, self.ignore_eos)


@dataclass
class _Row:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[int | BaseException | None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: int = 0
    finished: bool = False
    finish_reason: str = "length"

    def push(self, item: int | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass
class Completion:
    """What the caller reads while a generation streams."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "length"


def validate_model_dir(model_dir: Path) -> dict[str, Any]:
    """Refuse a missing or corrupt directory before anything loads."""
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{model_dir} has no config.json: not a Transformers model directory")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{config_file} is not valid JSON: {err}") from err
    if not any(any(model_dir.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelDirError(f"{model_dir} has no weights (*.safetensors)")
    return config


def quantization_config(quantization: str, use_gpu: bool) -> Any:
    """bitsandbytes 4- or 8-bit loading; it needs a CUDA GPU and the optional extra (`[quantization]`)."""
    if quantization not in ("int4", "int8"):
        raise ModelDirError(f"--quantization {quantization}: use int4 or int8")
    if not use_gpu:
        raise ModelDirError(f"--quantization {quantization} needs a CUDA GPU (bitsandbytes); none is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelDirError(
            f"--quantization {quantization} needs bitsandbytes: pip install 'sdc-localllm[quantization]'"
        )
    import torch
    from transformers import BitsAndBytesConfig

    config: Any = BitsAndBytesConfig  # untyped in transformers
    if quantization == "int4":
        return config(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")
    return config(load_in_8bit=True)


class Engine:
    def __init__(
        self,
        model_dir: Path,
        *,
        device: str | None = None,
        max_batch: int = 16,
        batch_wait_s: float = 0.005,
        quantization: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.quantization = quantization  # int4 | int8: bitsandbytes on a GPU
        self.config = validate_model_dir(model_dir)
        self.device_request = device
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.loaded = threading.Event()
        self._pending: queue.Queue[_Row] = queue.Queue()
        self._deferred: list[_Row] = []
        self.model: Any = None
        self.tokenizer: Any = None
        self.is_generative = any(a.endswith("ForCausalLM") for a in self.config.get("architectures", []))

    # -- loading -----------------------------------------------------------
    def load(self) -> None:
        """Load weights (blocking). CPU in float32; a GPU in bf16 with a device map."""
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        try:
            use_gpu = self.device_request != "cpu" and torch.cuda.is_available()
            kwargs: dict[str, Any] = {"trust_remote_code": False}
            if use_gpu:
                kwargs.update(dtype=torch.bfloat16, device_map="auto")
            if self.quantization:
                kwargs["quantization_config"] = quantization_config(self.quantization, use_gpu)
            cls = AutoModelForCausalLM if self.is_generative else AutoModel
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False)
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = cls.from_pretrained(self.model_dir, **kwargs).eval()
        except Exception as err:
            raise ModelDirError(f"cannot load model from {self.model_dir}: {err}") from err
        log.info("model loaded from %s in %.2fs", self.model_dir, time.monotonic() - started)
        self.loaded.set()
        threading.Thread(target=self._serve_forever, name="sdc-generate", daemon=True).start()

    @property
    def context_limit(self) -> int:
        limit = self.config.get("max_position_embeddings") or getattr(self.tokenizer, "model_max_length", None)
        return int(limit or 2048)

    # -- requests ------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(ids, add_special_tokens=False)["input_ids"])
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return list(self.tokenizer(text)["input_ids"])

    def check_budget(self, prompt_ids: Sequence[int], max_tokens: int) -> None:
        if len(prompt_ids) + max_tokens > self.context_limit:
            raise PromptTooLongError(
                f"prompt is {len(prompt_ids)} tokens and max_tokens is {max_tokens}: together they exceed "
                f"the model's context limit of {self.context_limit} tokens"
            )

    async def stream(self, prompt_ids: list[int], params: SamplingParams, result: Completion) -> AsyncIterator[str]:
        """Yield text deltas; stops early on a stop string; cancels its row if the caller goes away."""
        self.check_budget(prompt_ids, params.max_tokens)
        row = _Row(prompt_ids, params, asyncio.get_running_loop(), asyncio.Queue())
        self._pending.put(row)
        metrics.QUEUE_DEPTH.inc()
        tokens: list[int] = []
        emitted = ""
        hold = max((len(s) for s in params.stop), default=1) - 1
        try:
            while True:
                item = await row.out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                tokens.append(item)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte
                    continue
                cut = min((i for s in params.stop if (i := text.find(s)) >= 0), default=-1)
                if cut >= 0:
                    row.cancelled.set()
                    row.finish_reason = "stop"
                    if cut > len(emitted):
                        yield text[len(emitted) : cut]
                    emitted = text[:cut]
                    break
                safe = len(text) - hold if params.stop else len(text)
                if safe > len(emitted):
                    yield text[len(emitted) : safe]
                    emitted = text[:safe]
            if row.finish_reason != "stop" and params.stop:
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if len(text) > len(emitted):
                    yield text[len(emitted) :]
        finally:
            row.cancelled.set()
            result.completion_tokens = row.generated
            result.finish_reason = row.finish_reason
            metrics.GENERATED_TOKENS.inc(row.generated)
            metrics.PROMPT_TOKENS.inc(len(prompt_ids))

    async def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        return await asyncio.to_thread(self._embed_sync, list(texts))

    def _embed_sync(self, texts: list[str]) -> tuple[list[list[float]], int]:
        import torch

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.context_limit, return_tensors="pt"
        ).to(self.model.device)
        with torch.inference_mode():
            out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.cpu().tolist(), int(batch["attention_mask"].sum())

    # -- the scheduler thread -----------------------------------------------------
    def _next_batch(self) -> list[_Row]:
        first = self._deferred.pop(0) if self._deferred else self._pending.get()
        batch = [first]
        key = first.params.batch_key()
        if key is None:
            return batch
        still_deferred = []
        for row in self._deferred:
            if len(batch) < self.max_batch and row.params.batch_key() == key:
                batch.append(row)
            else:
                still_deferred.append(row)
        self._deferred = still_deferred
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                row = self._pending.get(timeout=max(timeout, 0)) if timeout > 0 else self._pending.get_nowait()
            except queue.Empty:
                break
            (batch if row.params.batch_key() == key else self._deferred).append(row)
        return batch

    def _serve_forever(self) -> None:
        while True:
            batch = self._next_batch()
            metrics.QUEUE_DEPTH.dec(len(batch))
            live = [row for row in batch if not row.cancelled.is_set()]
            for row in batch:
                if row.cancelled.is_set():
                    row.push(None)
            if not live:
                continue
            started = time.monotonic()
            try:
                self._generate(live)
            except Exception as err:  # a failed batch fails its rows, never the worker
                log.exception("generation failed")
                for row in live:
                    row.push(err)
            finally:
                for row in live:
                    row.push(None)
            elapsed = time.monotonic() - started
            produced = sum(row.generated for row in live)
            metrics.BATCH_SIZE.observe(len(live))
            if elapsed > 0:
                metrics.TOKENS_PER_SECOND.set(produced / elapsed)

    def _generate(self, rows: list[_Row]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        eos_ids = set(_as_list(self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id))

        class RowStreamer(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first echoes the prompt
                    self.prompt_seen = True
                    return
                for row, token in zip(rows, value.reshape(-1).tolist(), strict=True):
                    if row.finished:
                        continue
                    if token in eos_ids and not row.params.ignore_eos:
                        row.finished, row.finish_reason = True, "stop"
                        continue
                    row.generated += 1
                    row.push(int(token))
                    if row.generated >= row.params.max_tokens:
                        row.finished, row.finish_reason = True, "length"

            def end(self) -> None:
                for row in rows:
                    row.finished = True

        class RowStop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor([row.finished or row.cancelled.is_set() for row in rows], device=input_ids.device)

        params = rows[0].params
        width = max(len(row.prompt_ids) for row in rows)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows])
        attention = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampling}
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.ignore_eos:  # benchmarks: a fixed number of tokens whatever the model says
            kwargs["min_new_tokens"] = max(row.params.max_tokens for row in rows)
        device = self.model.device
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max(row.params.max_tokens for row in rows),
                streamer=RowStreamer(),
                stopping_criteria=StoppingCriteriaList([RowStop()]),
                pad_token_id=pad,
                **kwargs,
            )


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
