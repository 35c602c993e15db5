"""Okapi BM25 over pre-tokenized passages, with incremental add and remove, scored with numpy.

Each passage gets a slot (reused after removal); each term keeps its postings
as slot -> term frequency, turned into two numpy arrays the first time a query
needs them after a change. A query then costs one vectorized update per query
term over that term's postings, not a Python loop per posting: at 10,000
passages a query of 30 weighted terms stays around a millisecond.

`search_terms` takes weighted terms (exact terms 1.0, expansions less), which
is how the retriever adds semantic neighbours without letting them outrank
the words the user actually wrote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class BM25Index:
    def __init__(self, tokenizer: Callable[[str], list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.tokenizer = tokenizer
        self.k1 = k1
        self.b = b
        self.docs: dict[str, Counter[str]] = {}
        self.postings: dict[str, dict[int, int]] = {}
        self._slot: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self._lengths: FloatArray = np.zeros(64)
        self._total = 0
        self._arrays: dict[str, tuple[npt.NDArray[np.int64], FloatArray]] = {}

    def __len__(self) -> int:
        return len(self.docs)

    def add(self, key: str, text: str, tokens: list[str] | None = None) -> list[str]:
        self.remove(key)
        toks = tokens if tokens is not None else self.tokenizer(text)
        counts = Counter(toks)
        slot = self._free.pop() if self._free else len(self._keys)
        if slot == len(self._keys):
            self._keys.append(key)
            if slot >= len(self._lengths):
                self._lengths = np.concatenate([self._lengths, np.zeros(len(self._lengths))])
        else:
            self._keys[slot] = key
        self._slot[key] = slot
        self._lengths[slot] = len(toks)
        self._total += len(toks)
        self.docs[key] = counts
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[slot] = tf
            self._arrays.pop(term, None)
        return toks

    def remove(self, key: str) -> None:
        counts = self.docs.pop(key, None)
        if counts is None:
            return
        slot = self._slot.pop(key)
        self._keys[slot] = None
        self._free.append(slot)
        self._total -= int(self._lengths[slot])
        self._lengths[slot] = 0
        for term in counts:
            posting = self.postings[term]
            del posting[slot]
            self._arrays.pop(term, None)
            if not posting:
                del self.postings[term]

    def df(self, term: str) -> int:
        return len(self.postings.get(term, ()))

    def idf(self, term: str) -> float:
        n, df = len(self.docs), self.df(term)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def _posting_arrays(self, term: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self.postings[term]
            arrays = (np.fromiter(posting.keys(), np.int64, len(posting)), np.fromiter(posting.values(), float))
            self._arrays[term] = arrays
        return arrays

    def search_terms(
        self, weights: Mapping[str, float], k: int = 10, keys: Iterable[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top `k` passages for weighted query terms: sum of weight x BM25 contribution of each term."""
        if not self.docs:
            return []
        n = len(self.docs)
        avg = self._total / n or 1.0
        size = len(self._keys)
        denom_len = self.k1 * (1 - self.b + self.b * self._lengths[:size] / avg)
        scores = np.zeros(size)
        for term, weight in weights.items():
            if term not in self.postings or weight <= 0:
                continue
            slots, tf = self._posting_arrays(term)
            scores[slots] += weight * self.idf(term) * tf * (self.k1 + 1) / (tf + denom_len[slots])
        if keys is not None:
            mask = np.zeros(size, dtype=bool)
            mask[[self._slot[key] for key in keys if key in self._slot]] = True
            scores[~mask] = 0
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        ordered = hits[np.argsort(-scores[hits], kind="stable")]
        return [(self._keys[slot] or "", float(scores[slot])) for slot in ordered]

    def search(self, query: str, k: int = 10, keys: Iterable[str] | None = None) -> list[tuple[str, float]]:
        return self.search_terms(dict.fromkeys(self.tokenizer(query), 1.0), k, keys)
