"""KV blocks of prompt prefixes, kept across requests so a repeated prefix skips its prefill.

A prompt is cut into blocks of `BLOCK` tokens; block i is named by a digest chained over the
blocks before it (blake2b of the parent's digest and its own token ids), so a name stands for the
whole prefix up to that block, as vLLM's block hashes do, and two prompts share exactly the
blocks of their common block-aligned prefix. A block holds that prefix's keys and values for
every layer (one `[2, kv heads, BLOCK, head dim]` tensor: keys and values), copied out of the batch cache: entries are never
shared with a running row, so evicting one is always safe and a row's cache never aliases the
store.

Only full blocks are kept, and a request reuses at most its prompt's length minus one token: the
last prompt token must go through the model to give the first token's logits. Bounded by a token
budget (blocks x `BLOCK`), evicted least recently used. A lookup or an insert touches a chain's
blocks from the deepest to the first, so a prefix's first blocks are always more recent than its
later ones and eviction takes later blocks first (a later block without its parents is useless).

Correctness rests on causal attention: the keys and values of positions 0..p depend only on tokens
0..p, so the blocks computed with one suffix serve any other (the tests compare greedy outputs with
and without the cache).
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("sdc_runtime.prefix_cache")

BLOCK = 16

Block = list[Any]  # per layer: keys and values of one block stacked, None for a layer without KV


def block_names(ids: Sequence[int], blocks: int) -> list[bytes]:
    """The chained digests of the first `blocks` full blocks of `ids`."""
    names: list[bytes] = []
    parent = b""
    for i in range(blocks):
        chunk = array("q", ids[i * BLOCK : (i + 1) * BLOCK]).tobytes()
        parent = hashlib.blake2b(parent + chunk, digest_size=16).digest()
        names.append(parent)
    return names


class PrefixCache:
    """An LRU store of prompt-prefix KV blocks, at most `budget_tokens` tokens (0: off)."""

    def __init__(self, budget_tokens: int) -> None:
        self.capacity = max(0, budget_tokens) // BLOCK
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def tokens(self) -> int:
        return len(self._blocks) * BLOCK

    def lookup(self, ids: Sequence[int]) -> list[Block]:
        """The cached blocks of the longest cached prefix of `ids` that leaves its last token to compute."""
        if not self.enabled:
            return []
        found: list[Block] = []
        names = block_names(ids, (len(ids) - 1) // BLOCK)
        for name in names:
            block = self._blocks.get(name)
            if block is None:
                break
            found.append(block)
        for name in reversed(names[: len(found)]):
            self._blocks.move_to_end(name)
        return found

    def insert(self, ids: Sequence[int], first: int, blocks: Sequence[Block]) -> None:
        """Store `blocks`, the full blocks of `ids` from block number `first` on (earlier ones are cached)."""
        if not self.enabled:
            return
        names = block_names(ids, first + len(blocks))
        if blocks and not self._blocks:
            size = sum(t.numel() * t.element_size() for t in blocks[0] if t is not None)
            log.info(
                "prefix cache: up to %d tokens, %.1f MiB at %d bytes per token",
                self.capacity * BLOCK,
                self.capacity * size / 2**20,
                size // BLOCK,
            )
        for name, block in zip(names[first:], blocks, strict=True):
            self._blocks.setdefault(name, block)
        for name in reversed(names):
            if name in self._blocks:
                self._blocks.move_to_end(name)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()
