"""Hybrid retrieval: BM25 over Kiwi morphemes, fused with dense vectors when an embedder exists.

Fusion is reciprocal-rank (RRF, k=60): it needs no score calibration between
BM25 and cosine similarity, and one strong ranking cannot be drowned by a weak
one. Without an embedding endpoint, retrieval is BM25 alone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sdc_orchestrator.rag.bm25 import BM25Index
from sdc_orchestrator.rag.korean import chunk, morphemes
from sdc_orchestrator.rag.store import Document, DocumentStore, Passage

Embedder = Callable[[list[str]], Awaitable[list[list[float]] | None]]
RRF_K = 60


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    metadata: dict[str, Any]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class Retriever:
    def __init__(self, store: DocumentStore, embedder: Embedder | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.bm25 = BM25Index(morphemes)
        self.passages: dict[str, Passage] = {}
        self.documents: dict[str, Document] = {}
        self._lock = asyncio.Lock()
        for doc in store.load_all():
            self._index(doc)

    def _index(self, doc: Document) -> None:
        self.documents[doc.id] = doc
        for passage in doc.passages:
            self.passages[passage.key] = passage
            self.bm25.add(passage.key, passage.text, passage.tokens or None)

    def _unindex(self, doc_id: str) -> None:
        doc = self.documents.pop(doc_id, None)
        for passage in doc.passages if doc else []:
            self.passages.pop(passage.key, None)
            self.bm25.remove(passage.key)

    async def upsert(self, doc_id: str, text: str, metadata: dict[str, Any]) -> Document:
        texts = await asyncio.to_thread(chunk, text)
        tokens = await asyncio.to_thread(lambda: [morphemes(t) for t in texts])
        vectors = await self.embedder(texts) if self.embedder else None
        passages = [
            Passage(doc_id, i, t, toks, vectors[i] if vectors else None)
            for i, (t, toks) in enumerate(zip(texts, tokens, strict=True))
        ]
        doc = Document(doc_id, text, metadata, passages)
        async with self._lock:
            await asyncio.to_thread(self.store.put, doc)
            self._unindex(doc_id)
            self._index(doc)
        return doc

    async def delete(self, doc_id: str) -> bool:
        async with self._lock:
            existed = await asyncio.to_thread(self.store.delete, doc_id)
            self._unindex(doc_id)
        return existed

    async def search(self, query: str, k: int = 4) -> list[Hit]:
        if not self.passages:
            return []
        lexical = await asyncio.to_thread(self.bm25.search, query, k * 4)
        rankings = [[key for key, _ in lexical]]
        if self.embedder and any(p.vector for p in self.passages.values()):
            qvec = await self.embedder([query])
            if qvec:
                dense = sorted(
                    ((key, cosine(qvec[0], p.vector)) for key, p in self.passages.items() if p.vector),
                    key=lambda item: -item[1],
                )[: k * 4]
                rankings.append([key for key, _ in dense])
        fused: dict[str, float] = {}
        for ranking in rankings:
            for rank, key in enumerate(ranking):
                fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda item: -item[1])[:k]
        return [
            Hit(self.passages[key], score, self.documents[self.passages[key].doc_id].metadata) for key, score in best
        ]
