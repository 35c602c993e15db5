"""Continuous batching over one Transformers model, fed from many async requests.

Why our own decode loop instead of `model.generate`: `generate` runs a batch
from start to end, so a request that arrives while long ones decode waits for
all of them (static batching). Here one scheduler thread owns the model and
runs one step at a time over whatever rows are live:

- **Joining.** Before every decode step the thread takes waiting requests (up
  to `max_batch` rows and `max_prefill_tokens` prompt tokens per step),
  prefills them together (left-padded), samples their first token, and merges
  their KV cache into the running one. The batch cache is one tensor per layer
  `[rows, heads, columns, dim]`, left-padded: a row whose history is shorter
  than the longest gets zero columns on the left, masked out by the 2D
  attention mask, and every row carries its own position ids, which is all a
  Transformers causal LM needs to treat padded rows exactly like unpadded ones
  (the same contract `generate` uses for left padding). A newcomer takes the
  slot of a row that ended when its history fits the batch's columns (its
  keys and values written into that row's last columns); otherwise merging is
  a left pad plus a concatenation along the batch dimension. A prompt that
  starts with blocks of the prefix cache (`prefix_cache.py`) prefills only
  the rest, its cached blocks given as its past. The batch's layers keep spare
  columns and append each step's keys and values in place (Transformers' own
  layer copies the whole cache per token), and a padded step hands SDPA its
  mask ready-made instead of having it rebuilt per step.
- **Leaving.** A row that ends (end of sequence, its token budget, one of its
  stop strings, or a cancelled client) answers at once; its slot stays for a
  few steps for a newcomer to take (cutting it out copies the whole cache,
  see `_Batch`), and the batch is compacted with an index select when such
  slots are a quarter of the rows or one has waited 8 steps. Columns that
  became padding for every remaining row are trimmed, so a finished long row
  costs nothing for long.
- **Per-row settings.** Greedy rows take one `argmax` over the batch; sampled
  rows get their own temperature and top-p and their own `torch.Generator`
  (seeded when the request gives a seed, so a seed reproduces whatever else
  shares the batch). Text is assembled per row in this thread (incremental
  detokenization, stop strings: `detok.py`) and handed to the row's own
  outbox, so outputs never interleave and a stop string frees the row at
  once. The hand-off wakes the event loop at most once per batch of pieces
  (`Outbox`), and not at all per token for an answer sent whole.

Why a thread: every step is blocking torch work; the event loop must keep
serving HTTP meanwhile. Admission is bounded: at most `max_queue` requests wait
for a row; beyond that `submit` raises `QueueFullError` (a 503 with
`Retry-After`), so overload is visible to clients and load balancers instead
of an unbounded queue of timeouts.

Models whose cache is not plain full attention (sliding-window or hybrid
layers, e.g. Gemma 2/3) cannot be merged by padding: for them rows still
leave at once, but new rows join only when the batch is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdc_runtime import metrics
from sdc_runtime.detok import Detokenizer, StopMatcher
from sdc_runtime.loading import LoadOptionError, LoadOptions, LoadPlan, from_pretrained_kwargs, plan_load
from sdc_runtime.prefix_cache import BLOCK, Block, PrefixCache

log = logging.getLogger("sdc_runtime.engine")

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
GREEDY_BELOW = 1e-5  # temperatures this small are greedy (dividing logits by 1e-300 overflows)


class ModelDirError(Exception):
    """The model directory is missing or unusable; the message says what to fix."""


class BadPromptError(ValueError):
    """The request cannot be turned into a prompt; the message says why (a 400)."""


class PromptTooLongError(BadPromptError):
    """The prompt plus the requested tokens exceed the model's context."""


class QueueFullError(Exception):
    """Every row is busy and the waiting queue is full: come back later."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


class Outbox:
    """Hands a row's output from the scheduler thread to its event loop, one wake-up per batch of items.

    Waking an event loop from another thread costs a self-pipe write, a loop iteration and a GIL
    hand-off. The scheduler thread only appends; it wakes the loop when no wake-up is pending yet,
    and the reader takes everything that piled up since. So a reader that keeps up gets each token as
    it comes, one that falls behind gets them joined, and the decode thread never waits on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[str | BaseException | None] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._ready = asyncio.Event()

    def put(self, item: str | BaseException | None) -> None:
        """Scheduler thread: queue an item; wake the loop unless a wake-up is already on its way."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> list[str | BaseException | None]:
        """Event loop: everything queued so far, waiting for at least one item."""
        while True:
            with self._lock:
                items = list(self._items)
                self._items.clear()
                self._wake_pending = False
            if items:
                return items
            # No await between the unlock and clear(): a wake-up scheduled after the unlock runs
            # on this loop only once we wait, so it cannot be lost.
            self._ready.clear()
            await self._ready.wait()


@dataclass(eq=False)
class _Row:
    prompt_ids: list[int]
    params: SamplingParams
    out: Outbox
    detok: Detokenizer
    stops: StopMatcher
    streamed: bool = True  # False: the text goes out once, at the end (no per-token hand-off)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: Any = None
    generated: int = 0
    position: int = 0  # position id of `next_input`: the real tokens before it
    next_input: int = 0
    finished: bool = False
    finished_at: int = 0  # the engine's step count when the row ended
    finish_reason: str = "length"
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    parts: list[str] = field(default_factory=list)  # text held back for a row that is not streamed

    def push(self, item: str | BaseException | None) -> None:
        self.out.put(item)

    def emit(self, text: str) -> None:
        if self.streamed:
            self.out.put(text)
        else:
            self.parts.append(text)


class Generation:
    """One submitted request: iterate `deltas()` for its text; usage is final once that ends."""

    def __init__(self, row: _Row) -> None:
        self._row = row
        self.prompt_tokens = len(row.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return self._row.generated

    @property
    def finish_reason(self) -> str:
        return self._row.finish_reason

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache (final once the first delta arrived)."""
        return self._row.cached_tokens

    def cancel(self) -> None:
        """Free the row at the next step (the client went away)."""
        self._row.cancelled.set()

    async def deltas(self) -> AsyncIterator[str]:
        """The text as it comes (consecutive pieces that queued up meanwhile arrive joined)."""
        try:
            while True:
                text: list[str] = []
                end: BaseException | None = None
                done = False
                for item in await self._row.out.take():
                    if item is None:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        end = item
                        break
                    text.append(item)
                if text:
                    yield "".join(text)
                if end is not None:
                    raise end
                if done:
                    return
        finally:
            self._row.cancelled.set()  # a no-op once finished; frees the row if the reader stopped early


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
        self._pending: queue.Queue[_Row] = queue.Queue()
        self._waiting = 0  # submitted, not yet admitted (guarded by _lock)
        self._lock = threading.Lock()
        self.running = 0  # rows in the batch (read by tests and metrics)
        self.steps = 0
        self.reused_slots = 0  # newcomers placed in an ended row's slot (read by tests)
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self.joinable = True
        self.plan: LoadPlan | None = None
        self.max_token_chars = 64
        self._encoders: tuple[Any, Any] | None = None  # (reads control tokens, keeps them text)
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
        self._encoders = _fixed_encoders(self.tokenizer)
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
            threading.Thread(target=self._serve_forever, name="sdc-generate", daemon=True).start()

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
        """Token ids of the chat, with message contents tokenized as plain text.

        The chat template is rendered with a placeholder per message; the template's own text is
        tokenized with its control tokens, each message's content with special tokens split, so a
        `<|im_start|>system` typed by a user (or found in a retrieved document) stays text.
        """
        pieces = self._chat_pieces(messages)
        ids: list[int] = []
        for text, is_content in pieces:
            if not text:
                continue
            if self._encoders is not None:
                ids += self._encoders[is_content].encode(text, add_special_tokens=False).ids
            else:
                ids += self.tokenizer(text, add_special_tokens=False, split_special_tokens=is_content)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if (
            not getattr(self.tokenizer, "chat_template", None)
            and bos is not None
            and getattr(self.tokenizer, "add_bos_token", False)
        ):
            ids.insert(0, bos)
        return ids

    def _chat_pieces(self, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
        if not getattr(self.tokenizer, "chat_template", None):
            pieces: list[tuple[str, bool]] = []
            for m in messages:
                pieces += [(f"{m['role']}: ", False), (m["content"], True), ("\n", False)]
            return [*pieces, ("assistant:", False)]
        marks = [f"\ue000sdc{i}\ue001" for i in range(len(messages))]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": mark} for m, mark in zip(messages, marks, strict=True)],
            add_generation_prompt=True,
            tokenize=False,
        )
        if all(rendered.count(mark) == 1 for mark in marks):
            pieces = []
            rest = rendered
            for m, mark in zip(messages, marks, strict=True):
                before, rest = rest.split(mark, 1)
                pieces += [(before, False), (m["content"], True)]
            return [*pieces, (rest, False)]
        # The template rewrites or drops contents: tokenize it whole, but only if no content holds a control token.
        specials = [t for t in self.tokenizer.all_special_tokens if t]
        specials += [str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()]
        for m in messages:
            found = next((s for s in specials if s in m["content"]), None)
            if found is not None:
                raise BadPromptError(
                    f"a {m['role']} message contains the control sequence {found!r}, which this model's chat "
                    "template cannot keep apart from its own"
                )
        full = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return [(full, False)]

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
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"{self._waiting} requests are already waiting for a free row")
            self._waiting += 1
        row = _Row(
            prompt_ids,
            params,
            Outbox(asyncio.get_running_loop()),
            Detokenizer(self.tokenizer),
            StopMatcher(params.stop),
            streamed=stream,
        )
        self.stats.waiting.inc()
        self._pending.put(row)
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

    # -- the scheduler thread -----------------------------------------------------
    def _take_waiting(self, free: int, block: bool) -> list[_Row]:
        rows: list[_Row] = []
        budget = self.max_prefill_tokens
        while len(rows) < free:
            try:
                row = self._pending.get(timeout=None) if block and not rows else self._pending.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._waiting -= 1
            self.stats.waiting.dec()
            if row.cancelled.is_set():
                row.push(None)
                continue
            rows.append(row)
            budget -= len(row.prompt_ids)
            if budget <= 0:
                break
        return rows

    def _serve_forever(self) -> None:
        import torch

        eos = set(_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
        eos |= set(_as_list(self.tokenizer.eos_token_id))
        pad = self.tokenizer.pad_token_id
        batch = _Batch(self, eos, 0 if pad is None else int(pad))
        while True:
            newcomers: list[_Row] = []
            try:
                with torch.inference_mode():
                    if not batch.rows or self.joinable:
                        newcomers = self._take_waiting(self.max_batch - batch.live(), block=not batch.rows)
                        if newcomers:
                            batch.admit(newcomers)
                    batch.drop_finished()
                    if batch.rows:
                        batch.step()
            except Exception as err:  # a failed step fails its rows, never the worker
                log.exception("generation step failed")
                batch.fail_all(err, newcomers)
            self.running = batch.live()
            self.stats.running.set(self.running)
            self.stats.kv_usage.set(batch.kv_columns() / (self.max_batch * self.context_limit))


class _Batch:
    """The running rows and their shared, left-padded KV cache.

    A row that ends stays in the batch as a placeholder (its slot) for a few steps instead of being
    cut out at once: cutting a row copies every layer's whole cache (and costs the next append its
    spare columns, a second copy), and under churn (clients sending back to back, rows of mixed
    lengths) rows end every few steps while newcomers arrive a step or two later. A newcomer takes a
    free slot by writing its prefill's keys and values into that row's last columns and masking the
    rest: a copy of its own cache only. A placeholder keeps decoding its last token at a frozen
    position (its output is ignored; its row never becomes fully masked, which would put NaNs in
    SDPA) until reused, or until the batch is compacted: when placeholders are a quarter of the rows
    or one has waited `SLOT_STEPS` steps. Columns that became padding for every row are trimmed
    when they are a quarter of the cache.
    """

    SLOT_STEPS = 8

    def __init__(self, engine: Engine, eos: set[int], pad: int) -> None:
        self.engine = engine
        self.model = engine.model
        self.eos = eos
        self.pad = pad  # any id: padded columns are masked out
        # Transformers 5 renamed the cache argument and output field `past_key_values` to `cache`.
        self.cache_field = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, columns] of 1 (real) / 0 (padding)
        # Whether any column of `mask` is padding. Without padding the model gets no mask at all: it
        # then skips building a 4D attention mask every step (a lone row is never padded).
        self.padded = False
        self.tokens_since = time.monotonic()

    def admit(self, newcomers: list[_Row]) -> None:
        """Prefill the newcomers together and add them to the batch.

        A newcomer whose prompt starts with cached blocks (`prefix_cache.py`) gets their keys and values
        as its past and prefills only the rest. The newcomers' past is right-aligned on `past` columns
        and their remaining prompts left-padded on `width` columns, so a row's history may hold padding
        between its cached prefix and its suffix: the 2D mask and per-row position ids carry that, as
        they carry left padding.
        """
        import torch

        prefix = self.engine.prefix_cache
        use_prefix = prefix.enabled and self.engine.joinable
        try:
            hits = [prefix.lookup(r.prompt_ids) if use_prefix else [] for r in newcomers]
            cached = [len(h) * BLOCK for h in hits]
            past = max(cached)
            suffixes = [r.prompt_ids[c:] for r, c in zip(newcomers, cached, strict=True)]
            width = max(len(s) for s in suffixes)
            ids = torch.tensor([[self.pad] * (width - len(s)) + s for s in suffixes])
            mask = torch.tensor(
                [
                    [0] * (past - c) + [1] * c + [0] * (width - len(s)) + [1] * len(s)
                    for s, c in zip(suffixes, cached, strict=True)
                ]
            )
            positions = torch.tensor(
                [[0] * (width - len(s)) + list(range(c, c + len(s))) for s, c in zip(suffixes, cached, strict=True)]
            )
            history = {self.cache_field: _past_cache(hits, past, width)} if past else {}
            out = self.model(
                input_ids=ids.to(self.engine.device),
                attention_mask=mask.to(self.engine.device),
                position_ids=positions.to(self.engine.device),
                use_cache=True,
                logits_to_keep=1,
                **history,
            )
        except Exception as err:
            log.exception("prefill failed")
            for row in newcomers:
                self._finish(row, "error", err)
            return
        stats = self.engine.stats
        for row, c in zip(newcomers, cached, strict=True):
            row.position = len(row.prompt_ids)
            row.cached_tokens = c
            if use_prefix:
                stats.prefix_queries.inc(len(row.prompt_ids))
                stats.prefix_hits.inc(c)
            if not row.params.greedy:
                row.generator = torch.Generator(device=out.logits.device)
                if row.params.seed is not None:
                    row.generator.manual_seed(row.params.seed)
                else:
                    row.generator.seed()
        self._emit(newcomers, out.logits[:, -1, :])
        mask = mask.to(self.engine.device)
        cache = getattr(out, self.cache_field)
        padded = not bool(mask.all())
        if not self.rows:
            self.engine.joinable = _all_full_attention(cache)
            if not self.engine.joinable:
                prefix.clear()  # sliding or hybrid layers: a prefix's KV is not a plain run of columns
        if self.engine.joinable and prefix.enabled:
            self._keep_prefixes(newcomers, cache, cached, past + width)
        if not self.rows:
            self.rows, self.cache, self.mask, self.padded = newcomers, cache, mask, padded
            _grow_in_place(cache)
        else:
            self._place(newcomers, _layer_kv(cache), mask)

    def live(self) -> int:
        """Rows still generating (placeholders of ended rows not counted)."""
        return sum(not row.finished for row in self.rows)

    def _place(self, newcomers: list[_Row], kv: list[tuple[Any, Any] | None], mask: Any) -> None:
        """Newcomers into free slots where their history fits the batch's columns; the rest appended."""
        import torch

        columns, width = self.mask.shape[1], mask.shape[1]
        free = [i for i, row in enumerate(self.rows) if row.finished] if width <= columns else []
        placed = min(len(free), len(newcomers))
        if placed:
            slots = torch.tensor(free[:placed], device=self.mask.device)
            start = columns - width
            for mine, theirs in zip(self.cache.layers, kv, strict=True):
                if theirs is None or not _holds_kv(mine):
                    continue
                mine.keys[slots, :, start:] = theirs[0][:placed]  # views: written into the layer's storage
                mine.values[slots, :, start:] = theirs[1][:placed]
            rows_mask = torch.zeros((placed, columns), dtype=self.mask.dtype, device=self.mask.device)
            rows_mask[:, start:] = mask[:placed]
            self.mask[slots] = rows_mask
            for slot, row in zip(free, newcomers[:placed], strict=False):
                self.rows[slot] = row
            self.padded = True
            self.engine.reused_slots += placed
        if placed < len(newcomers):
            rest = [None if pair is None else (pair[0][placed:], pair[1][placed:]) for pair in kv]
            self._merge(newcomers[placed:], rest, mask[placed:])

    def _keep_prefixes(self, newcomers: list[_Row], cache: Any, cached: list[int], columns: int) -> None:
        """Copy the newcomers' full prompt blocks that the prefix cache lacks out of their prefill's cache."""
        import torch

        layers = cache.layers
        for i, (row, c) in enumerate(zip(newcomers, cached, strict=True)):
            first, full = c // BLOCK, len(row.prompt_ids) // BLOCK
            if full <= first:
                continue
            # Prompt tokens after the cached ones are right-aligned: token j sits in column `base + j`.
            base = columns - len(row.prompt_ids)
            blocks: list[Block] = []
            for b in range(first, full):
                a = base + b * BLOCK
                blocks.append(
                    [
                        torch.stack([layer.keys[i, :, a : a + BLOCK], layer.values[i, :, a : a + BLOCK]])
                        if _holds_kv(layer)
                        else None
                        for layer in layers
                    ]
                )
            self.engine.prefix_cache.insert(row.prompt_ids, first, blocks)

    def kv_columns(self) -> int:
        """Cache entries the running batch holds (rows x columns, padding included)."""
        return 0 if self.mask is None else int(self.mask.shape[0] * self.mask.shape[1])

    def _merge(self, newcomers: list[_Row], kv: list[tuple[Any, Any] | None], mask: Any) -> None:
        """Append rows: left-pad the batch or the newcomers to the wider history and concatenate (a copy)."""
        import torch
        from torch.nn.functional import pad

        width = max(self.mask.shape[1], mask.shape[1])
        a, b = width - self.mask.shape[1], width - mask.shape[1]
        for mine, theirs in zip(self.cache.layers, kv, strict=True):
            if theirs is None or not _holds_kv(mine):
                continue
            mine.keys = torch.cat([pad(mine.keys, (0, 0, a, 0)), pad(theirs[0], (0, 0, b, 0))])
            mine.values = torch.cat([pad(mine.values, (0, 0, a, 0)), pad(theirs[1], (0, 0, b, 0))])
        self.mask = torch.cat([pad(self.mask, (a, 0)), pad(mask, (b, 0))])
        self.padded = self.padded or not bool(mask.all()) or a > 0 or b > 0
        self.rows = self.rows + newcomers

    def drop_finished(self) -> None:
        import torch

        for row in self.rows:
            if row.cancelled.is_set() and not row.finished:
                self._finish(row, "cancelled")
        keep = [i for i, row in enumerate(self.rows) if not row.finished]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.padded = [], None, None, False
            return
        ended = [row.finished_at for row in self.rows if row.finished]
        slots_worth_keeping = (
            self.engine.joinable
            and 4 * len(ended) < len(self.rows)
            and self.engine.steps - min(ended) < self.SLOT_STEPS
        )
        if not slots_worth_keeping:
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.rows = [self.rows[i] for i in keep]
        if self.engine.joinable:  # columns that are padding for every row left are dead weight
            first = int(self.mask.any(0).int().argmax())
            if first > 0 and (not slots_worth_keeping or 4 * first >= self.mask.shape[1]):
                self.mask = self.mask[:, first:]
                for layer in self.cache.layers:
                    if _holds_kv(layer):
                        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        self.padded = not bool(self.mask.all())

    def step(self) -> None:
        import torch

        device = self.engine.device
        ids = torch.tensor([[r.next_input] for r in self.rows], device=device)
        positions = torch.tensor([[r.position] for r in self.rows], device=device)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=device)], 1)
        mask = None
        if self.padded:
            # With one query token per row the 4D mask is the 2D one, broadcast: handing it over ready
            # spares Transformers building it (vmapped mask functions) in every step, a quarter of a
            # 16-row step on CPU. Only SDPA reads a boolean 4D mask that way (eager adds the mask).
            mask = self.mask.bool()[:, None, None, :] if self.sdpa else self.mask
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_field: self.cache},
        )
        self.cache = getattr(out, self.cache_field)
        for row in self.rows:
            if not row.finished:  # a placeholder keeps its position: it stays within the model's range
                row.position += 1
        self._emit(self.rows, out.logits[:, -1, :])
        self.engine.steps += 1
        metrics.BATCH_SIZE.observe(self.live())

    def _emit(self, rows: list[_Row], logits: Any) -> None:
        """Choose each row's next token and turn it into text for that row."""
        greedy = logits.argmax(-1).tolist()
        produced = 0
        for i, row in enumerate(rows):
            if row.finished:
                continue
            token = greedy[i] if row.params.greedy else _sample(logits[i], row.params, row.generator)
            if token in self.eos and not row.params.ignore_eos:
                self._finish(row, "stop")
                continue
            row.generated += 1
            produced += 1
            text, stopped = row.stops.feed(row.detok.step(token))
            if text:
                row.emit(text)
            if stopped:
                self._finish(row, "stop")
            elif row.generated >= row.params.max_tokens:
                self._finish(row, "length")
            else:
                row.next_input = token
        self.engine.stats.generation_tokens.inc(produced)
        now = time.monotonic()
        if now > self.tokens_since:
            metrics.TOKENS_PER_SECOND.set(produced / (now - self.tokens_since))
        self.tokens_since = now

    def _finish(self, row: _Row, reason: str, error: BaseException | None = None) -> None:
        row.finished, row.finish_reason, row.finished_at = True, reason, self.engine.steps
        if error is not None:
            row.push(error)
        elif reason != "cancelled":
            tail = row.stops.flush() if reason != "stop" else ""
            if tail:
                row.emit(tail)
            if row.parts:
                row.push("".join(row.parts))
        self.engine.stats.prompt_tokens.inc(len(row.prompt_ids))
        row.push(None)

    def fail_all(self, err: BaseException, newcomers: Sequence[_Row] = ()) -> None:
        for row in [*self.rows, *newcomers]:
            if not row.finished:
                self._finish(row, "error", err)
        self.rows, self.cache, self.mask, self.padded = [], None, None, False


def _sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Temperature and nucleus (top-p) sampling for one row, with that row's own generator."""
    import torch

    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[outside] = 0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def _fixed_encoders(tokenizer: Any) -> tuple[Any, Any] | None:
    """Two copies of a fast tokenizer's Rust backend: one reads control tokens, one keeps them text.

    Calling the Transformers tokenizer flips one shared `encode_special_tokens` switch on its
    backend before each encode: a chat's template and its contents need opposite settings, and a
    long chat is tokenized in a worker thread while the event loop tokenizes another, so a flip
    between another call's flip and its encode could read a user's `<|im_start|>` as a control
    token. Each copy here keeps its setting for good. Calling the backend directly also halves the cost of tokenizing
    a chat (work the event loop does per request). `None` for tokenizers without a Rust backend (they take the slow path).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_special_tokens"):
        return None
    from tokenizers import Tokenizer

    controls, text = Tokenizer.from_str(backend.to_str()), Tokenizer.from_str(backend.to_str())
    for copy, keep_text in ((controls, False), (text, True)):
        copy.no_truncation()
        copy.no_padding()
        copy.encode_special_tokens = keep_text
    return controls, text


def _past_cache(hits: list[list[Block]], past: int, room: int) -> Any:
    """A cache of the newcomers' cached prefixes, right-aligned on `past` columns (zeros where masked).

    Each layer gets `room` more columns after them, so the prefill writes its keys and values in place
    (`_growing_layer_class`) instead of concatenating a copy of the past.
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    reference = next(blocks[0] for blocks in hits if blocks)
    layers: list[Any] = []
    for index, like in enumerate(reference):
        if like is None:
            layers.append(DynamicLayer())  # type: ignore[no-untyped-call]
            continue
        # [keys/values, rows, heads, columns, dim]: a row's blocks land in one copy per layer
        kv = like.new_zeros((2, len(hits), like.shape[1], past + room, like.shape[-1]))
        for row, blocks in enumerate(hits):
            if blocks:
                parts = [block[index] for block in blocks]
                kv[:, row, :, past - len(blocks) * BLOCK : past] = torch.cat(parts, dim=2)
        layers.append(_growing_layer_class()(kv[0], kv[1], past))
    cache = DynamicCache()
    cache.layers = layers
    return cache


def _layer_kv(cache: Any) -> list[tuple[Any, Any] | None]:
    """Each layer's (keys, values), None for a layer that holds none."""
    return [(layer.keys, layer.values) if _holds_kv(layer) else None for layer in cache.layers]


def _all_full_attention(cache: Any) -> bool:
    """Only plain growing caches can be merged by left padding (see the module docstring)."""
    from transformers.cache_utils import DynamicLayer

    layers: Any = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, _growing_layer_class()) for layer in layers)


def _grow_in_place(cache: Any) -> None:
    """Give the batch cache's plain layers spare columns (see `_growing_layer_class`)."""
    from transformers.cache_utils import DynamicLayer

    layers: Any = getattr(cache, "layers", None)
    for i, layer in enumerate(layers or ()):
        if type(layer) is DynamicLayer and _holds_kv(layer):
            layers[i] = _growing_layer_class()(layer.keys, layer.values)


@functools.cache
def _growing_layer_class() -> type:
    """A `DynamicLayer` that appends in place (built on first use: Transformers loads lazily).

    `DynamicLayer.update` concatenates, copying a layer's whole cache to add one column: for 16 rows
    that is a tenth of a decode step on CPU, and it grows with every row and token. This layer keeps
    spare columns after the live ones and writes each new token into them, copying only when they
    run out (every `SPARE` steps). `keys`/`values` stay views of the live columns, so whatever
    assigns them (merging, dropping rows, trimming, `batch_select_indices`) works unchanged: an
    assigned tensor simply has no spare columns until the next append makes some.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        SPARE = 64

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int | None = None) -> None:
            """`length`: the live columns when fewer than the tensors hold (the rest is room to append)."""
            super().__init__()  # type: ignore[no-untyped-call]
            self.keys, self.values = keys, values
            if length is not None:
                self._length = self._values_length = length
            self.device = keys.device
            self.is_initialized = True

        @property
        def keys(self) -> torch.Tensor | None:
            return None if self._keys is None else self._keys[:, :, : self._length]

        @keys.setter
        def keys(self, keys: torch.Tensor | None) -> None:
            self._keys = keys
            self._length = 0 if keys is None else keys.shape[-2]

        @property
        def values(self) -> torch.Tensor | None:
            return None if self._values is None else self._values[:, :, : self._values_length]

        @values.setter
        def values(self, values: torch.Tensor | None) -> None:
            # Its own length: callers assign keys and values one after the other, and read values in between.
            self._values = values
            self._values_length = 0 if values is None else values.shape[-2]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if self._keys is None or self._values is None:
                self.keys, self.values = key_states, value_states
                self.device, self.is_initialized = key_states.device, True
                return key_states, value_states
            start, end = self._length, self._length + key_states.shape[-2]
            if end > self._keys.shape[-2]:
                self._keys = _with_room(self._keys, start, end + self.SPARE)
                self._values = _with_room(self._values, start, end + self.SPARE)
            self._keys[:, :, start:end] = key_states
            self._values[:, :, start:end] = value_states
            self._length = self._values_length = end
            return self._keys[:, :, :end], self._values[:, :, :end]

    return GrowingLayer


def _with_room(tensor: Any, live: int, columns: int) -> Any:
    """A copy of `tensor`'s first `live` columns in a tensor of `columns` columns."""
    roomy = tensor.new_empty((*tensor.shape[:2], columns, tensor.shape[-1]))
    roomy[:, :, :live] = tensor[:, :, :live]
    return roomy


def _holds_kv(layer: Any) -> bool:
    """Layers that share another layer's KV (or hold none yet) have nothing to pad or trim."""
    keys = getattr(layer, "keys", None)
    return keys is not None and keys.dim() == 4


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
