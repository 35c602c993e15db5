"""The Korean evaluation set (benchmarks/data) against floors, and ingestion that scales linearly.

The floors are what the service retriever reaches on the set, less a small margin; both
baselines are computed in the same run so that "no kind worse than Kiwi BM25" is checked too.
Full tables, the ablation and latency figures: `benchmarks/retrieval_eval.py` (`make bench`).
"""

from __future__ import annotations

import hashlib
import time

import pytest
from sdc_orchestrator.rag.korean import morphemes
from sdc_orchestrator.rag.retriever import prepare

from benchmarks.retrieval_eval import (
    DATA,
    FRESH_SETS,
    HELDOUT_SETS,
    HELDOUT_SHA256,
    KINDS,
    Question,
    Scores,
    bm25_ranker,
    build_retriever,
    evaluate,
    korean_text,
    load_fresh,
    load_heldout,
    load_passages,
    load_questions,
    service_ranker,
)

# Measured: hit@1 0.96, hit@5 1.00, paraphrase hit@5 1.00 (Kiwi BM25: 0.76, 0.88, 0.44); the issue's
# targets are 0.85 / 0.95 / paraphrase 0.85. On the fresh paraphrases (written after the thesaurus was
# frozen, never tuned on) hit@5 is 0.94 with the workplace lexicon, 0.74 without (Kiwi BM25 0.56).
# A second author's 60 paraphrases (fresh2: saw only the passages; scored once, after the lexicon was frozen):
# hit@5 0.93 (0.88 before the lexicon; Kiwi BM25 0.68). The floors leave one to three questions of margin.
FLOORS = {"hit1": 0.95, "hit5": 0.98, "paraphrase_hit5": 0.94, "fresh_hit5": 0.88, "fresh2_hit5": 0.90}


@pytest.fixture(scope="module")
def results() -> tuple[dict[str, Scores], dict[str, Scores]]:
    passages, questions = load_passages(), load_questions()
    service = evaluate(service_ranker(build_retriever(passages)), questions)
    kiwi = evaluate(bm25_ranker(passages, morphemes), questions)
    return service, kiwi


def test_the_set_is_what_the_issue_asks_for() -> None:
    passages, questions = load_passages(), load_questions()
    assert len(passages) >= 200
    assert len(questions) >= 150
    assert {q.kind for q in questions} == set(KINDS)
    assert all(q.answer in passages for q in questions), "every question names an existing passage"


def test_service_meets_the_floors(results: tuple[dict[str, Scores], dict[str, Scores]]) -> None:
    service, _ = results
    hit1, hit5, _ = service["all"].row()
    assert hit1 >= FLOORS["hit1"]
    assert hit5 >= FLOORS["hit5"]
    assert service["paraphrase"].row()[1] >= FLOORS["paraphrase_hit5"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_kind_worse_than_kiwi_bm25(kind: str, results: tuple[dict[str, Scores], dict[str, Scores]]) -> None:
    service, kiwi = results
    mine, base = service[kind].row(), kiwi[kind].row()
    assert mine[0] >= base[0], f"{kind}: hit@1 {mine[0]:.2f} < Kiwi BM25 {base[0]:.2f}"
    assert mine[1] >= base[1], f"{kind}: hit@5 {mine[1]:.2f} < Kiwi BM25 {base[1]:.2f}"
    assert mine[2] >= base[2] - 0.02, f"{kind}: MRR {mine[2]:.2f} < Kiwi BM25 {base[2]:.2f}"


@pytest.mark.parametrize("name", sorted(FRESH_SETS))
def test_fresh_paraphrases_beat_kiwi_bm25(name: str) -> None:
    """Out of sample: questions nobody tuned anything on."""
    passages, fresh = load_passages(), load_fresh(name)
    assert len(fresh) >= 30 and all(q.answer in passages for q in fresh)
    service = evaluate(service_ranker(build_retriever(passages)), fresh)["all"].row()
    kiwi = evaluate(bm25_ranker(passages, morphemes), fresh)["all"].row()
    assert all(mine >= base for mine, base in zip(service, kiwi, strict=True)), (service, kiwi)
    assert service[1] >= FLOORS[f"{name}_hit5"], service


def test_sources_say_why_near_duplicates_were_told_apart() -> None:
    retriever = build_retriever(load_passages())
    best = retriever.search_sync("2024년 개정된 연차 이월 한도는?", 3)[0]
    assert best.passage.doc_id == "hr-annual-2024"
    assert "2024년" in best.matched
    assert "2024년" in best.deciding, best


def test_ingestion_is_linear_in_the_text() -> None:
    """4x the text in at most 5.5x the time (issue #13): CPU time of this process (what the work costs,
    not how long it waited for a core on a shared machine), best of three, sizes interleaved."""
    passages = load_passages()
    small, large = korean_text(passages, 10_000), korean_text(passages, 40_000)
    prepare("warm-up", small[:2000], {})
    best = {len(small): float("inf"), len(large): float("inf")}
    for _ in range(3):
        for text in (small, large):
            started = time.process_time()
            prepare("doc", text, {})
            best[len(text)] = min(best[len(text)], time.process_time() - started)
    ratio = best[len(large)] / best[len(small)]
    print(f"\ningestion: 10k chars {best[len(small)]:.2f} s, 40k chars {best[len(large)]:.2f} s, ratio {ratio:.2f}")
    assert ratio <= 5.5


# Issue #27's held-out set (238 questions, frozen before any tuning): measured hit@1 0.88, hit@5 0.95 (Kiwi BM25
# 0.68 / 0.90; the retriever before issue #27 0.78 / 0.92; 0.87 / 0.94 at its first stop). Floors two to five
# questions below.
# heldout4 (184 questions over heldout3's passages, written from the passages alone and frozen before this round's
# retrieval changes), scored with the code as it was at the freeze ("untuned"): hit@1 0.86, hit@5 0.92 (Kiwi BM25
# 0.72 / 0.86; paraphrase 0.39 / 0.58 against 0.14 / 0.36).
HELDOUT_FLOORS = {"heldout3": {"hit1": 0.86, "hit5": 0.94}, "heldout4": {"hit1": 0.84, "hit5": 0.91}}


@pytest.fixture(scope="module")
def heldout() -> dict[str, tuple[list[Question], dict[str, Scores], dict[str, Scores]]]:
    out = {}
    for name in HELDOUT_SETS:
        passages, questions = load_heldout(name)
        service = service_ranker(build_retriever(passages))
        kiwi = bm25_ranker(passages, morphemes)
        out[name] = (questions, evaluate(service, questions), evaluate(kiwi, questions))
    return out


@pytest.mark.parametrize("name", sorted(HELDOUT_SETS))
def test_the_heldout_set_is_the_frozen_one(name: str) -> None:
    """Its files are byte for byte what was frozen before any tuning (sha256 recorded at the freeze)."""
    for filename, digest in zip(HELDOUT_SETS[name], HELDOUT_SHA256[name], strict=True):
        assert hashlib.sha256((DATA / filename).read_bytes()).hexdigest() == digest, filename
    passages, questions = load_heldout(name)
    assert all(q.answer in passages for q in questions)
    assert {q.kind for q in questions} == set(KINDS)


@pytest.mark.parametrize("name", sorted(HELDOUT_SETS))
def test_heldout_meets_its_floors(
    name: str, heldout: dict[str, tuple[list[Question], dict[str, Scores], dict[str, Scores]]]
) -> None:
    _, service, _ = heldout[name]
    hit1, hit5, _ = service["all"].row()
    assert hit1 >= HELDOUT_FLOORS[name]["hit1"], hit1
    assert hit5 >= HELDOUT_FLOORS[name]["hit5"], hit5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(HELDOUT_SETS))
def test_heldout_no_kind_worse_than_kiwi_bm25(
    name: str, kind: str, heldout: dict[str, tuple[list[Question], dict[str, Scores], dict[str, Scores]]]
) -> None:
    _, service, kiwi = heldout[name]
    mine, base = service[kind].row(), kiwi[kind].row()
    assert mine[0] >= base[0], f"{name} {kind}: hit@1 {mine[0]:.2f} < Kiwi BM25 {base[0]:.2f}"
    assert mine[1] >= base[1], f"{name} {kind}: hit@5 {mine[1]:.2f} < Kiwi BM25 {base[1]:.2f}"
