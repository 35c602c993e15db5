"""The running batch: rows joining (prefill), decoding one token per step, and leaving.

- **Joining.** Before every decode step the scheduler thread takes waiting requests (up to
  `max_batch` rows and `max_prefill_tokens` prompt tokens per step); `Batch.admit` prefills them
  together (left-padded), samples their first token, and merges their KV cache into the running one
  (`kv_cache.py`). A newcomer takes the slot of a row that ended when its history fits the batch's
  columns (its keys and values written into that row's last columns); otherwise merging is a left
  pad plus a concatenation along the batch dimension. A prompt that starts with blocks of the prefix
  cache (`prefix_cache.py`) prefills only the rest, its cached blocks given as its past. The batch's
  layers keep spare columns and append each step's keys and values in place (Transformers' own
  layer copies the whole cache per token), and a padded step hands SDPA its mask ready-made instead
  of having it rebuilt per step.
- **Leaving.** A row that ends (end of sequence, its token budget, one of its stop strings, or a
  cancelled client) answers at once; its slot stays for a few steps for a newcomer to take (cutting
  it out copies the whole cache, see `Batch`), and the batch is compacted with an index select when
  such slots are a quarter of the rows or one has waited 8 steps. Columns that became padding for
  every remaining row are trimmed, so a finished long row costs nothing for long.
- **Text.** Each row's text is assembled in this thread (incremental detokenization, stop strings:
  `detok.py`) and handed to the row's own outbox, so outputs never interleave and a stop string
  frees the row at once.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

from sdc_runtime import metrics
from sdc_runtime.kv_cache import all_full_attention, grow_in_place, holds_kv, layer_kv, past_cache
from sdc_runtime.prefix_cache import BLOCK, Block, PrefixCache
from sdc_runtime.request import Row
from sdc_runtime.sampling import generator_for, sample

log = logging.getLogger("sdc_runtime.engine")


class Batch:
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

    def __init__(
        self, model: Any, device: Any, prefix_cache: PrefixCache, stats: metrics.ModelMetrics, eos: set[int], pad: int
    ) -> None:
        self.model = model
        self.device = device  # where inputs go (the embeddings' device)
        self.prefix_cache = prefix_cache
        self.stats = stats
        self.steps = 0
        self.reused_slots = 0  # newcomers placed in an ended row's slot (read by tests)
        # False once the first prefill shows a cache that padding cannot merge: new rows then join only an empty batch.
        self.joinable = True
        self.eos = eos
        self.pad = pad  # any id: padded columns are masked out
        # Transformers 5 renamed the cache argument and output field `past_key_values` to `cache`.
        self.cache_field = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, columns] of 1 (real) / 0 (padding)
        # Whether any column of `mask` is padding. Without padding the model gets no mask at all: it
        # then skips building a 4D attention mask every step (a lone row is never padded).
        self.padded = False
        self.tokens_since = time.monotonic()

    def admit(self, newcomers: list[Row]) -> None:
        """Prefill the newcomers together and add them to the batch.

        A newcomer whose prompt starts with cached blocks (`prefix_cache.py`) gets their keys and values
        as its past and prefills only the rest (`_prefill`).
        """
        prefix = self.prefix_cache
        use_prefix = prefix.enabled and self.joinable
        try:
            hits = [prefix.lookup(r.prompt_ids) if use_prefix else [] for r in newcomers]
            out, mask = self._prefill(newcomers, hits)
        except Exception as err:
            log.exception("prefill failed")
            for row in newcomers:
                self._finish(row, "error", err)
            return
        cached = [len(h) * BLOCK for h in hits]
        stats = self.stats
        for row, c in zip(newcomers, cached, strict=True):
            row.position = len(row.prompt_ids)
            row.cached_tokens = c
            if use_prefix:
                stats.prefix_queries.inc(len(row.prompt_ids))
                stats.prefix_hits.inc(c)
            row.generator = generator_for(row.params, out.logits.device)
        self._emit(newcomers, out.logits[:, -1, :])
        cache = getattr(out, self.cache_field)
        padded = not bool(mask.all())
        if not self.rows:
            self.joinable = all_full_attention(cache)
            if not self.joinable:
                prefix.clear()  # sliding or hybrid layers: a prefix's KV is not a plain run of columns
        if self.joinable and prefix.enabled:
            self._keep_prefixes(newcomers, cache, cached, mask.shape[1])
        if not self.rows:
            self.rows, self.cache, self.mask, self.padded = newcomers, cache, mask, padded
            grow_in_place(cache)
        else:
            self._place(newcomers, layer_kv(cache), mask)

    def _prefill(self, newcomers: list[Row], hits: list[list[Block]]) -> tuple[Any, Any]:
        """One forward over the newcomers' uncached prompt tokens: the model's output and their history's 2D mask.

        The newcomers' past (their cached blocks) is right-aligned on `past` columns and their remaining
        prompts left-padded on `width` columns, so a row's history may hold padding between its cached
        prefix and its suffix: the 2D mask and per-row position ids carry that, as they carry left padding.
        """
        import torch

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
        history = {self.cache_field: past_cache(hits, past, width)} if past else {}
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=self._prefill_mask(mask, past).to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **history,
        )
        return out, mask.to(self.device)

    def _prefill_mask(self, mask: Any, past: int) -> Any:
        """The prefill's attention mask: the 2D one, or for SDPA with padding or a past, its 4D form ready-made.

        Given a padded 2D mask, Transformers builds the 4D one with vmapped mask functions: on CPU a
        third of a small prefill (22 -> 16 ms for 2 rows of 30 tokens), paid at every join. Query i (column
        `past + i`) sees the real columns up to its own. A padding query sees nothing real before it, and
        SDPA must not get a fully masked row (NaNs reach the real rows through that position's keys and
        values in the next layer): it sees every column instead, as Transformers' own fix does; its output
        is never read.
        """
        import torch

        if not self.sdpa or (not past and bool(mask.all())):
            return mask  # eager adds its mask, and an unpadded prompt is plain causal (Transformers skips the mask)
        width = mask.shape[1] - past
        causal = torch.arange(mask.shape[1])[None, :] <= (past + torch.arange(width))[:, None]
        full = causal[None, None] & mask.bool()[:, None, None, :]
        return full | ~full.any(-1, keepdim=True)

    def live(self) -> int:
        """Rows still generating (placeholders of ended rows not counted)."""
        return sum(not row.finished for row in self.rows)

    def _place(self, newcomers: list[Row], kv: list[tuple[Any, Any] | None], mask: Any) -> None:
        """Newcomers into free slots where their history fits the batch's columns; the rest appended."""
        import torch

        columns, width = self.mask.shape[1], mask.shape[1]
        free = [i for i, row in enumerate(self.rows) if row.finished] if width <= columns else []
        placed = min(len(free), len(newcomers))
        if placed:
            slots = torch.tensor(free[:placed], device=self.mask.device)
            start = columns - width
            for mine, theirs in zip(self.cache.layers, kv, strict=True):
                if theirs is None or not holds_kv(mine):
                    continue
                mine.keys[slots, :, start:] = theirs[0][:placed]  # views: written into the layer's storage
                mine.values[slots, :, start:] = theirs[1][:placed]
            rows_mask = torch.zeros((placed, columns), dtype=self.mask.dtype, device=self.mask.device)
            rows_mask[:, start:] = mask[:placed]
            self.mask[slots] = rows_mask
            for slot, row in zip(free, newcomers[:placed], strict=False):
                self.rows[slot] = row
            self.padded = True
            self.reused_slots += placed
        if placed < len(newcomers):
            rest = [None if pair is None else (pair[0][placed:], pair[1][placed:]) for pair in kv]
            self._merge(newcomers[placed:], rest, mask[placed:])

    def _keep_prefixes(self, newcomers: list[Row], cache: Any, cached: list[int], columns: int) -> None:
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
                        if holds_kv(layer)
                        else None
                        for layer in layers
                    ]
                )
            self.prefix_cache.insert(row.prompt_ids, first, blocks)

    def kv_columns(self) -> int:
        """Cache entries the running batch holds (rows x columns, padding included)."""
        return 0 if self.mask is None else int(self.mask.shape[0] * self.mask.shape[1])

    def _merge(self, newcomers: list[Row], kv: list[tuple[Any, Any] | None], mask: Any) -> None:
        """Append rows: left-pad the batch or the newcomers to the wider history and concatenate (a copy)."""
        import torch
        from torch.nn.functional import pad

        width = max(self.mask.shape[1], mask.shape[1])
        a, b = width - self.mask.shape[1], width - mask.shape[1]
        for mine, theirs in zip(self.cache.layers, kv, strict=True):
            if theirs is None or not holds_kv(mine):
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
            self.joinable and 4 * len(ended) < len(self.rows) and self.steps - min(ended) < self.SLOT_STEPS
        )
        if not slots_worth_keeping:
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.rows = [self.rows[i] for i in keep]
        if self.joinable:  # columns that are padding for every row left are dead weight
            first = int(self.mask.any(0).int().argmax())
            if first > 0 and (not slots_worth_keeping or 4 * first >= self.mask.shape[1]):
                self.mask = self.mask[:, first:]
                for layer in self.cache.layers:
                    if holds_kv(layer):
                        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        self.padded = not bool(self.mask.all())

    def step(self) -> None:
        import torch

        device = self.device
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
        self.steps += 1
        metrics.BATCH_SIZE.observe(self.live())

    def _emit(self, rows: list[Row], logits: Any) -> None:
        """Choose each row's next token and turn it into text for that row."""
        greedy = logits.argmax(-1).tolist()
        produced = 0
        for i, row in enumerate(rows):
            if row.finished:
                continue
            token = greedy[i] if row.params.greedy else sample(logits[i], row.params, row.generator)
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
        self.stats.generation_tokens.inc(produced)
        now = time.monotonic()
        if now > self.tokens_since:
            metrics.TOKENS_PER_SECOND.set(produced / (now - self.tokens_since))
        self.tokens_since = now

    def _finish(self, row: Row, reason: str, error: BaseException | None = None) -> None:
        row.finished, row.finish_reason, row.finished_at = True, reason, self.steps
        if error is not None:
            row.push(error)
        elif reason != "cancelled":
            tail = row.stops.flush() if reason != "stop" else ""
            if tail:
                row.emit(tail)
            if row.parts:
                row.push("".join(row.parts))
        self.stats.prompt_tokens.inc(len(row.prompt_ids))
        row.push(None)

    def fail_all(self, err: BaseException, newcomers: Sequence[Row] = ()) -> None:
        for row in [*self.rows, *newcomers]:
            if not row.finished:
                self._finish(row, "error", err)
        self.rows, self.cache, self.mask, self.padded = [], None, None, False
