"""Which replica probably holds a prompt's prefix in its KV cache: an approximate index per replica.

Engines cache the KV of a prompt's leading tokens (vLLM's automatic prefix
caching hashes 16-token blocks, each hash chained to the one before). The
router has no tokenizer, so it does the same on characters: the rendered
messages are cut into blocks of BLOCK_CHARS characters and each block's key is
a hash chained to the previous key, so key k stands for the whole prefix of
k+1 blocks. 64 characters of Korean are 40-64 tokens (Hangul runs about one
token per 1-1.5 characters), 3-4 engine blocks: coarse enough to keep the
index small and the lookup cheap, fine enough that a shared system prompt
plus a shared passage is seen as shared.

The index of a replica is what this router sent it, not what the engine
holds: an LRU of block keys bounded per replica (engines evict too, and more
often than this, so the index is optimistic; the load bound in policy.py is
what keeps an optimistic match from herding traffic). Because key k is only
inserted with keys 0..k-1, the longest cached prefix is found by binary
search: O(log n) lookups per replica (eviction takes a prompt's tail blocks
before its head, so the chain stays whole from the front).

Keys use Python's own string hash (randomised per process, and fast: the
whole prompt is hashed in tens of microseconds); only `stable_key`, which
every orchestrator replica must compute alike for consistent hashing, is a
blake2b digest.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BLOCK_CHARS = 64
MAX_BLOCKS = 256  # 16k characters: past that, more prefix says little about where to go, and costs time
ENTRIES_PER_REPLICA = 16384  # 1M characters of prefixes (about an engine's KV capacity in tokens), ~2 MB per replica


def render(messages: object) -> str:
    """The messages as one string, in the order an engine's chat template lays them out.

    Anything that is not a list of role/content dicts renders as '' (no affinity): the router never
    fails a request the backend would answer or refuse on its own.
    """
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content: Any = message.get("content")
        if isinstance(content, list):  # OpenAI content parts: the text parts, in order
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        parts.append(f"{message.get('role', '')}\x1e{content if content is not None else ''}\x1f")
    return "".join(parts)


def block_keys(text: str, block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """Chained keys of the text's full leading blocks (a partial last block is left out, as engines do)."""
    keys: list[int] = []
    key = 0
    end = min(len(text) // block_chars, max_blocks) * block_chars
    for start in range(0, end, block_chars):
        key = hash((key, text[start : start + block_chars]))
        keys.append(key)
    return tuple(keys)


def stable_key(text: str, block_chars: int = BLOCK_CHARS) -> str:
    """The first block (or the whole text, when shorter) as a hash every process agrees on."""
    return hashlib.blake2b(text[:block_chars].encode(), digest_size=8).hexdigest()


class PrefixIndex:
    """Per-replica LRU sets of block keys."""

    def __init__(self, entries_per_replica: int = ENTRIES_PER_REPLICA) -> None:
        self.capacity = entries_per_replica
        self._replicas: dict[str, OrderedDict[int, None]] = {}

    def match(self, replica: str, keys: Sequence[int]) -> int:
        """How many leading blocks of `keys` this replica was sent before (binary search over the chain)."""
        seen = self._replicas.get(replica)
        if not seen or not keys:
            return 0
        lo, hi = 0, len(keys)  # invariant: keys[:lo] are present, keys[hi:] are not known to be
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if keys[mid - 1] in seen:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def record(self, replica: str, keys: Sequence[int]) -> None:
        """The replica was sent this prompt: its blocks are now (probably) in its cache."""
        seen = self._replicas.setdefault(replica, OrderedDict())
        # Deepest block first, so a prompt's leading blocks are its most recently used: eviction takes
        # tails before heads (as engines free leaf blocks first), and "key k present" keeps implying
        # "keys before k present", which `match`'s binary search relies on.
        for key in reversed(keys):
            seen[key] = None
            seen.move_to_end(key)
        while len(seen) > self.capacity:
            seen.popitem(last=False)

    def keep_only(self, replicas: Iterable[str]) -> None:
        """Forget replicas that are gone (a pod replaced has an empty cache, and a new name)."""
        live = set(replicas)
        for name in [n for n in self._replicas if n not in live]:
            del self._replicas[name]

    def size(self, replica: str) -> int:
        return len(self._replicas.get(replica, ()))
