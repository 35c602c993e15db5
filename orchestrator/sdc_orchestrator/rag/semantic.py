"""Semantic recall without a model hub: Kiwi's CoNg morpheme embeddings, as numpy vectors.

`kiwipiepy-model` ships the CoNg model (contextual n-gram embeddings) next to
the analyser, so a pip install gives an offline measure of how close two
morphemes are in meaning (부모 ~ 어른 0.64, 월급 ~ 급여 0.66, 암호 ~ 비밀번호 0.68,
사랑 ~ 알고리즘 0.17). Kiwi exposes it only pairwise (`morpheme_similarity`, a
cosine of unit vectors) and as a whole-vocabulary scan (`most_similar_morphemes`,
several milliseconds, and mostly words no document uses).

So the vectors are recovered once: CoNg's embeddings have 256 dimensions, and
the cosines of a morpheme to a fixed set of anchor morphemes that span the
space determine its vector up to one rotation shared by all morphemes. With
the anchors' Gram matrix G = U diag(w) U^T, a morpheme whose cosines to the
anchors are c has coordinates diag(w)^-1/2 U^T c, and dot products of those
coordinates equal Kiwi's own similarities (to 1e-7). Each new morpheme costs
one row of anchor similarities (~0.3 ms, paid at ingestion and cached); after
that, query expansion against the index vocabulary, soft term matching and a
bag-of-morphemes passage vector are plain numpy matrix products.

The anchor set is built from the shared Kiwi instance (`korean.kiwi()`), so
the model is loaded once per process.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from sdc_orchestrator.rag.korean import SIMILARITY_TAGS, kiwi

DIM = 256  # CoNg's embedding size (the rank of any large Gram matrix of its morphemes)
ANCHORS = 320
# Rare morphemes (월급날, 장인어른, 대시보드) barely moved from their initial vectors in training and sit near
# the common mean direction, so they look similar to each other and to nothing useful. A morpheme whose
# cosine to the mean direction exceeds this gets no vector (common words sit at 0.55-0.65, rare ones at 0.75+).
HUB_COSINE = 0.7
Vector = npt.NDArray[np.float32]


class CongSpace:
    """Morpheme id -> unit vector in CoNg's space (cached; thread-safe)."""

    def __init__(self) -> None:
        k = kiwi()
        anchors: list[int] = []
        morph_id = 200
        while len(anchors) < ANCHORS:  # common nouns and verb stems, spread over the vocabulary
            try:
                if k.morpheme(morph_id).tag in ("NNG", "NNP", "VV", "VA"):
                    anchors.append(morph_id)
            except (ValueError, IndexError, RuntimeError):
                pass
            morph_id += 7
        self.anchors = anchors
        sim = k.morpheme_similarity
        gram = np.array([[sim(a, b) for b in anchors] for a in anchors], dtype=np.float64)
        w, u = np.linalg.eigh(gram)
        top = np.argsort(w)[::-1][:DIM]
        self.projection = (u[:, top] / np.sqrt(np.maximum(w[top], 1e-9))).T.astype(np.float64)
        coords = gram @ self.projection.T  # the anchors' own vectors
        mean = coords.mean(axis=0)
        self.hub = mean / np.linalg.norm(mean)
        # One growing matrix holds every vector once (1 KiB per morpheme); passages keep row numbers.
        self._row: dict[int, int] = {}  # morph id -> row, -1 when CoNg has no usable vector
        self._store = np.zeros((1024, DIM), np.float32)
        self._size = 0
        self._lock = threading.Lock()

    def _compute(self, morph_id: int) -> Vector | None:
        sim = kiwi().morpheme_similarity
        try:
            cosines = np.fromiter((sim(morph_id, a) for a in self.anchors), np.float64, len(self.anchors))
        except (ValueError, RuntimeError):
            return None
        raw = self.projection @ cosines
        norm = float(np.linalg.norm(raw))
        return (raw / norm).astype(np.float32) if norm > 0.5 and raw @ self.hub / norm < HUB_COSINE else None

    def row(self, morph_id: int) -> int:
        """The row of a morpheme's vector in `store()`, computing it on first use; -1 when it has none."""
        found = self._row.get(morph_id)
        if found is not None:
            return found
        vec = self._compute(morph_id)
        with self._lock:
            if morph_id in self._row:
                return self._row[morph_id]
            if vec is None:
                self._row[morph_id] = -1
                return -1
            if self._size == len(self._store):
                self._store = np.concatenate([self._store, np.zeros_like(self._store)])
            self._store[self._size] = vec
            self._row[morph_id] = self._size
            self._size += 1
            return self._size - 1

    def store(self) -> Vector:
        return self._store

    def vector(self, morph_id: int) -> Vector | None:
        """The unit vector of a morpheme, or None when CoNg has none for it."""
        r = self.row(morph_id)
        return self._store[r] if r >= 0 else None

    def forget(self, keep: set[int]) -> None:
        """Forget which morphemes outside `keep` were seen (the benchmark's cold-cache latency)."""
        with self._lock:
            self._row = {k: v for k, v in self._row.items() if k in keep}

    def cached(self) -> set[int]:
        return set(self._row)

    def rows(self, morph_ids: Iterable[int]) -> tuple[list[int], npt.NDArray[np.int64]]:
        """The ids that have vectors, and their rows."""
        kept, rows = [], []
        for morph_id in morph_ids:
            r = self.row(morph_id)
            if r >= 0:
                kept.append(morph_id)
                rows.append(r)
        return kept, np.asarray(rows, dtype=np.int64)

    def matrix(self, morph_ids: Iterable[int]) -> tuple[list[int], Vector]:
        """The ids that have vectors, and their vectors as rows."""
        kept, rows = self.rows(morph_ids)
        return kept, self._store[rows]

    def mean(self, morph_ids: Iterable[int]) -> Vector | None:
        """Bag-of-morphemes vector of a text: the normalized mean of its morphemes' vectors."""
        _, rows = self.matrix(morph_ids)
        if not len(rows):
            return None
        total = rows.sum(axis=0)
        norm = float(np.linalg.norm(total))
        return (total / norm).astype(np.float32) if norm else None


@functools.lru_cache(maxsize=50_000)
def parts(form: str) -> tuple[int, ...]:
    """A compound CoNg has no good vector for (장인어른, 월급날), as two morphemes it has: (장인, 어른)."""
    if len(form) < 3:
        return ()
    k = kiwi()
    for cut in range(len(form) - 1, 0, -1):
        halves = []
        for piece in (form[:cut], form[cut:]):
            toks = [t for t in k.tokenize(piece) if t.tag.startswith(SIMILARITY_TAGS)]
            if len(toks) != 1 or toks[0].form != piece or space().vector(toks[0].id) is None:
                break
            halves.append(int(toks[0].id))
        if len(halves) == 2:
            return tuple(halves)
    return ()


@functools.cache
def space() -> CongSpace:
    return CongSpace()


@functools.lru_cache(maxsize=200_000)
def form_of(morph_id: int) -> str:
    """The (lower-cased) surface form of a morpheme id, as the index spells it."""
    try:
        token = kiwi().morpheme(morph_id)
    except (ValueError, RuntimeError, IndexError):
        return ""
    return str(token.form).lower() if str(token.tag).startswith(SIMILARITY_TAGS) else ""
