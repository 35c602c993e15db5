"""The reranker's signals (rag/signals.py), each a pure function checked against a table of small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sdc_orchestrator.rag import signals
from sdc_orchestrator.rag.signals import Coverage, CoverageQuery


@pytest.mark.parametrize(
    ("lexical", "expected"),
    [
        ([], {}),
        ([("a", 4.0), ("b", 2.0), ("c", 1.0)], {"a": 1.0, "b": 0.5, "c": 0.25}),
        ([("only", 0.7)], {"only": 1.0}),
    ],
)
def test_relative_bm25(lexical: list[tuple[str, float]], expected: dict[str, float]) -> None:
    assert signals.relative_bm25(lexical) == pytest.approx(expected)


# A question of three words (idf 1, 2, 1: 4 in all) and one joined compound that only marks presence.
IDF = {"수원": 2.0, "주차": 1.0, "등록": 1.0, "수원주차": 3.0}
BASE = CoverageQuery(IDF, ["수원", "주차", "등록"], {"수원주차"})
THESAURUS = CoverageQuery(IDF, ["수원", "주차", "등록"], set(), [(frozenset({"등록"}), (("신청",),), 0.5)])
SOFT = CoverageQuery(IDF, ["수원", "주차", "등록"], set(), THESAURUS.synonyms, ["등록", "주차"], soft_floor=0.4)


@pytest.mark.parametrize(
    ("name", "query", "terms", "blob", "sims", "expected"),
    [
        ("nothing", BASE, {"구미"}, "구미", None, Coverage(0.0, frozenset())),
        ("all exact", BASE, {"수원", "주차", "등록"}, "", None, Coverage(1.0, frozenset({"수원", "주차", "등록"}))),
        ("one rare word", BASE, {"수원"}, "수원", None, Coverage(0.5, frozenset({"수원"}))),
        (
            "the compound marks presence only",
            CoverageQuery(IDF, ["수원", "주차", "등록"], {"수원주차"}, substring=0.0),
            {"수원주차"},
            "수원주차",
            None,
            Coverage(0.0, frozenset({"수원주차"})),
        ),
        (
            "the compound's words inside it",
            BASE,
            {"수원주차"},
            "수원주차",
            None,
            Coverage(0.75, frozenset({"수원", "주차", "수원주차"})),
        ),
        # 수원 inside 수원사업장 (Kiwi kept the compound whole): full credit at substring 1
        ("inside a compound", BASE, {"수원사업장"}, "수원사업장", None, Coverage(0.5, frozenset({"수원"}))),
        (
            "inside, credit halved",
            CoverageQuery(IDF, ["수원"], set(), substring=0.5),
            {"수원사업장"},
            "수원사업장",
            None,
            Coverage(0.5, frozenset({"수원"})),
        ),
        (
            "inside, switched off",
            CoverageQuery(IDF, ["수원"], set(), substring=0.0),
            {"수원사업장"},
            "수원사업장",
            None,
            Coverage(0.0, frozenset()),
        ),
        (
            "thesaurus term at its scale",
            THESAURUS,
            {"신청"},
            "신청",
            None,
            Coverage(0.5 / 4, frozenset(), thesaurus=("등록~신청",)),
        ),
        (
            "an exact match needs no thesaurus",
            THESAURUS,
            {"등록", "신청"},
            "",
            None,
            Coverage(0.25, frozenset({"등록"})),
        ),
        # 등록 ~ 0.85 similar: (0.85 - 0.4) / 0.6 = 0.75 beats the thesaurus's 0.5; 주차 at 0.4 is no match
        (
            "similar morpheme beats the thesaurus",
            SOFT,
            {"신청"},
            "신청",
            [0.85, 0.4],
            Coverage(0.75 / 4, frozenset(), soft=(("등록", 0),)),
        ),
        (
            "thesaurus beats a weak similarity",
            SOFT,
            {"신청"},
            "신청",
            [0.6, 0.0],
            Coverage(0.125, frozenset(), thesaurus=("등록~신청",)),
        ),
        (
            "similarity never adds to an exact match",
            SOFT,
            {"등록"},
            "등록",
            [1.0, 0.0],
            Coverage(0.25, frozenset({"등록"})),
        ),
    ],
)
def test_coverage(
    name: str, query: CoverageQuery, terms: set[str], blob: str, sims: list[float] | None, expected: Coverage
) -> None:
    got = signals.coverage(query, terms, blob, sims)
    assert got.score == pytest.approx(expected.score), name
    assert (got.present, got.soft, got.thesaurus) == (expected.present, expected.soft, expected.thesaurus), name


def test_bigram_weights_and_overlap() -> None:
    df = {"수원": 1, "원주": 1, "주차": 9}
    weights, total = signals.bigram_weights(["수원", "원주", "주차", "차장"], df, 9, 0.1, 5.0)
    idf1, idf9 = math.log(1 + 8.5 / 1.5), math.log(1 + 0.5 / 9.5)
    assert weights == pytest.approx({"수원": idf1, "원주": idf1, "주차": idf9})
    assert total == pytest.approx(2 * idf1 + idf9 + 0.1 * 5.0)  # 차장 is in no passage: 0.1 of the top idf
    assert signals.bigram_overlap(weights, total, {"수원", "원주"}) == pytest.approx(2 * idf1 / total)
    assert signals.bigram_overlap(weights, total, {"주차"}) < 0.05, "a bigram every passage has weighs little"
    assert signals.bigram_overlap({}, 1.0, {"수원"}) == 0.0
    assert signals.bigram_weights([], {}, 9, 0.1, 5.0) == ({}, 1.0)


def test_cosine_and_weighted_sum() -> None:
    a, b = np.array([0.6, 0.8], np.float32), np.array([1.0, 0.0], np.float32)
    assert signals.cosine(a, b) == pytest.approx(0.6)
    assert signals.cosine(None, b) == 0.0 and signals.cosine(a, None) == 0.0
    weights = {"bm25": 1.0, "cover": 1.0, "detail": 1.0, "semantic": 2.0, "dense": 1.0, "bigram": 0.5}
    values = {"bm25": 0.5, "cover": 0.25, "detail": -0.5, "semantic": 0.1, "bigram": 1.0}  # no dense signal
    assert signals.weighted_sum(values, weights) == pytest.approx(0.5 + 0.25 - 0.5 + 0.2 + 0.5)


def test_soft_similarities_take_each_candidates_best_row() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    question = [np.array([1, 0], np.float32), np.array([0, 1], np.float32)]
    soft = signals.soft_similarities(vectors, {"a": np.array([0, 1]), "b": np.array([2])}, question)
    assert soft.best["a"] == pytest.approx([1.0, 1.0])
    assert soft.best["b"] == pytest.approx([0.6, 0.8])
    assert soft.start == {"a": 0, "b": 2} and soft.all.shape == (3, 2)
    assert signals.soft_similarities(vectors, {}, question).best == {}
    assert signals.soft_similarities(vectors, {"a": np.array([0])}, []).best == {}
