"""The reranker's signals, one pure function each, and their weighted sum (issue #28).

`Retriever._rerank` gathers what each signal needs from the index and the question and calls these;
nothing here reads the index, so each signal can be tested with a table of small inputs
(tests/orchestrator/test_rag_signals.py). Every signal is in [0, 1] (the detail signal in
[-conflict, 1]) so the weights need no calibration between them:

- `relative_bm25`: BM25 relative to the best candidate's.
- `coverage`: the idf-weighted share of the question's words a passage has: exactly, inside one of its
  compounds, through a thesaurus term, or softly through a CoNg-similar morpheme.
- `bigram_overlap`: the idf-weighted share of the question's character bigrams (spacing-blind).
- `cosine`: bag-of-morphemes similarity of question and passage.
- the detail signal is `details.discriminate` (it needs the whole cluster of candidates at once).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The signals `weighted_sum` adds, in this order (also the names of their weights in `Weights`).
SIGNALS = ("bm25", "cover", "detail", "semantic", "dense", "bigram", "kiwi")

_HANGUL_WORD = re.compile(r"^[가-힣]{2,}$")

# A thesaurus group that fired for the question: the question words that fired it, the index terms of
# each related word (a word split into parts), and the group's scale (hand-written 1.0, lexicon less).
Synonyms = tuple[frozenset[str], tuple[tuple[str, ...], ...], float]


def relative_bm25(lexical: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Each candidate's BM25 over the best one's (the list is ranked, best first)."""
    top = lexical[0][1] if lexical else 1.0
    return {key: score / top for key, score in lexical}


def reciprocal_rank(ranking: Sequence[tuple[str, float]]) -> dict[str, float]:
    """1 for the first of a ranking, 1/2 for the second, ...: a rank signal that ignores score scales."""
    return {key: 1.0 / (rank + 1) for rank, (key, _) in enumerate(ranking)}


@dataclass(frozen=True)
class CoverageQuery:
    """What coverage needs of the question, the same for every candidate."""

    idf: Mapping[str, float]  # every plain term and joined compound of the question
    concepts: Collection[str]  # the plain terms (joined compounds would count words twice)
    compounds: Collection[str]  # joined compounds that are not also plain terms: they only mark presence
    synonyms: Sequence[Synonyms] = ()
    soft_terms: Sequence[str] = ()  # the question word of each column of a candidate's best similarities
    substring: float = 1.0  # credit of a word found inside a passage's compound
    thesaurus_cover: float = 1.0  # credit of a word whose thesaurus term the passage has (times the scale)
    soft_floor: float = 0.4  # CoNg similarity at or below this is no match

    @property
    def total_idf(self) -> float:
        return sum(self.idf[t] for t in self.concepts) or 1.0


@dataclass(frozen=True)
class Coverage:
    score: float  # the covered share of the question's idf, in [0, 1]
    present: frozenset[str]  # question words (and compounds) the passage has, exactly or inside a compound
    soft: tuple[tuple[str, int], ...] = ()  # (question word, its column) covered by a similar morpheme
    thesaurus: tuple[str, ...] = ()  # "question word~passage term" covered through the thesaurus


def coverage(query: CoverageQuery, terms: Collection[str], blob: str, similarities: Sequence[float] | None) -> Coverage:
    """How much of the question one passage covers. `terms`: the passage's terms; `blob`: those terms
    joined by "|" (a question word inside one of its compounds: 세종 in 세종캠퍼스, 졸업 in 졸업증명서, as Kiwi
    keeps some compounds whole in one text and splits them in another); `similarities`: per column of
    `query.soft_terms`, the best CoNg similarity of any of the passage's morphemes (None: no morphemes).

    Each question word counts once, by its best kind of match: exact (its idf), inside a compound (times
    `substring`), then the better of the thesaurus (times its credit) and CoNg similarity (rescaled from
    the floor to 1)."""
    idf = query.idf
    found = {t for t in query.concepts if t in terms}
    inside = (
        {t for t in query.concepts if t not in found and _HANGUL_WORD.match(t) and t in blob}
        if query.substring > 0
        else set()
    )
    present = found | inside | {t for t in query.compounds if t in terms}
    score = sum(idf[t] for t in found) + query.substring * sum(idf[t] for t in inside)
    found |= inside
    thes: dict[str, tuple[float, str]] = {}
    for trigger, words, scale in query.synonyms:
        hit = next((t for word in words for t in word if t in terms), None)
        if hit is not None:
            for t in trigger:
                if t in idf and t not in found and query.thesaurus_cover * scale > thes.get(t, (0.0, ""))[0]:
                    thes[t] = (query.thesaurus_cover * scale, hit)
    soft: list[tuple[str, int]] = []
    if similarities is not None:
        floor = query.soft_floor
        credit: dict[str, tuple[float, int]] = {}
        for j, text in enumerate(query.soft_terms):
            s = similarities[j]
            if text not in found and s > floor and s > credit.get(text, (0.0, 0))[0]:
                credit[text] = (s, j)
        for text, (s, j) in credit.items():
            part = (s - floor) / (1 - floor)
            if part > thes.get(text, (0.0, ""))[0]:
                thes.pop(text, None)
                score += idf[text] * part
                soft.append((text, j))
    score += sum(idf[t] * part for t, (part, _) in thes.items())
    return Coverage(
        score / query.total_idf,
        frozenset(present),
        tuple(soft),
        tuple(f"{t}~{hit}" for t, (_, hit) in thes.items()),
    )


@dataclass(frozen=True)
class SoftSimilarities:
    """Every candidate's morphemes against the question's (one product for all of them)."""

    best: dict[str, list[float]]  # per candidate, per question column: the best similarity
    start: dict[str, int]  # the candidate's first row in `all`
    all: np.ndarray  # rows: the candidates' morphemes, one segment each; columns: the question's


def soft_similarities(
    vectors: np.ndarray, rows: Mapping[str, np.ndarray], question: Sequence[np.ndarray]
) -> SoftSimilarities:
    """`rows`: each candidate's rows of `vectors` (its morphemes' CoNg vectors), candidates without any left
    out; `question`: the vectors of the question's words. The best similarity per question word is the
    maximum over each candidate's segment of rows."""
    if not rows or not len(question):
        return SoftSimilarities({}, {}, np.zeros((0, 0), np.float32))
    keys = list(rows)
    lengths = [len(rows[key]) for key in keys]
    starts = np.cumsum([0, *lengths[:-1]])
    # all candidates' morphemes x the question's, on this thread (einsum never uses BLAS's threads)
    sims = np.einsum("rd,qd->rq", vectors[np.concatenate([rows[key] for key in keys])], np.stack(question))
    maxima = np.maximum.reduceat(sims, starts, axis=0).tolist()  # Python floats: read often
    return SoftSimilarities(
        {key: maxima[i] for i, key in enumerate(keys)}, {key: int(starts[i]) for i, key in enumerate(keys)}, sims
    )


def bigram_weights(
    query: Iterable[str], df: Mapping[str, int], passages: int, absent: float, max_idf: float
) -> tuple[dict[str, float], float]:
    """idf of each question bigram some passage has, and the total `bigram_overlap` divides by: a bigram no
    passage has counts in it at `absent` times the highest idf, so in a small corpus the one common bigram a
    question shares with it (회사) does not make a full match."""
    grams = list(query)
    weights = {g: math.log(1 + (passages - n + 0.5) / (n + 0.5)) for g in grams if (n := df.get(g, 0)) > 0}
    missing = sum(1 for g in grams if g not in weights)
    return weights, sum(weights.values()) + absent * max_idf * missing or 1.0


def bigram_overlap(weights: Mapping[str, float], total: float, passage: Collection[str]) -> float:
    """The idf-weighted share of the question's character bigrams that the passage has."""
    if not weights:
        return 0.0
    return sum(v for g, v in weights.items() if g in passage) / total


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine of two unit vectors; 0 when either side has none."""
    return float(a @ b) if a is not None and b is not None else 0.0


def weighted_sum(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The reranker's score: each signal in `SIGNALS` times its weight (a missing signal is 0)."""
    return sum(weights.get(name, 0.0) * values.get(name, 0.0) for name in SIGNALS)
