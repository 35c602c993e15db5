"""Okapi BM25 over pre-tokenized passages, with incremental add and remove."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable


class BM25Index:
    def __init__(self, tokenizer: Callable[[str], list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.tokenizer = tokenizer
        self.k1 = k1
        self.b = b
        self.docs: dict[str, Counter[str]] = {}
        self.lengths: dict[str, int] = {}
        self.df: Counter[str] = Counter()
        self.postings: dict[str, set[str]] = {}

    def add(self, key: str, text: str, tokens: list[str] | None = None) -> list[str]:
        self.remove(key)
        toks = tokens if tokens is not None else self.tokenizer(text)
        counts = Counter(toks)
        self.docs[key] = counts
        self.lengths[key] = len(toks)
        for term in counts:
            self.df[term] += 1
            self.postings.setdefault(term, set()).add(key)
        return toks

    def remove(self, key: str) -> None:
        counts = self.docs.pop(key, None)
        if counts is None:
            return
        del self.lengths[key]
        for term in counts:
            self.df[term] -= 1
            self.postings[term].discard(key)
            if self.df[term] <= 0:
                del self.df[term], self.postings[term]

    def search(self, query: str, k: int = 10, keys: Iterable[str] | None = None) -> list[tuple[str, float]]:
        if not self.docs:
            return []
        n = len(self.docs)
        avg = sum(self.lengths.values()) / n
        scores: dict[str, float] = {}
        for term in set(self.tokenizer(query)):
            if term not in self.postings:
                continue
            idf = math.log(1 + (n - self.df[term] + 0.5) / (self.df[term] + 0.5))
            for key in self.postings[term]:
                tf = self.docs[key][term]
                norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * self.lengths[key] / avg))
                scores[key] = scores.get(key, 0.0) + idf * norm
        allowed = set(keys) if keys is not None else None
        ranked = sorted(
            ((key, s) for key, s in scores.items() if allowed is None or key in allowed), key=lambda item: -item[1]
        )
        return ranked[:k]
