"""The retriever on its own: re-analysis of stored passages, replace/delete, dense fusion, explanations."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sdc_orchestrator.rag import semantic
from sdc_orchestrator.rag.korean import kiwi
from sdc_orchestrator.rag.retriever import Retriever
from sdc_orchestrator.rag.store import DirectoryStore, Document, MemoryStore, Passage

PARKING = "수원 사업장은 직원 차량 정기 주차를 허용하며, 주차 등록은 총무팀 포털에서 신청한다."
GUMI = "구미 사업장 주차장은 선착순이며 별도 등록 없이 사원증으로 출입한다."


def test_passages_stored_by_an_older_analyser_are_reanalysed_on_load(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    # What the previous version stored: plain morphemes, no analyser stamp, no morpheme ids.
    store.put(Document("old", PARKING, {}, [Passage("old", 0, PARKING, ["수원", "사업장", "주차"])]))
    retriever = Retriever(store)
    passage = retriever.passages["old#0"]
    assert passage.analyzer and passage.morphs, "re-analysed with the current analyser"
    assert retriever.search_sync("수원 사업장 주차 등록", 1)[0].passage.doc_id == "old"


def test_indexing_reuses_what_prepare_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passage carries its normalized text and details from `prepare` (and through the store), so indexing
    runs neither the normalizer nor the detail extraction again (issue #28: no cache of derived state)."""
    from sdc_orchestrator.rag import details
    from sdc_orchestrator.rag import retriever as module

    doc = module.prepare("trip", "2024년 개정 후 출장비는 나흘까지 지급한다.", {})
    passage = doc.passages[0]
    assert "2024년" in passage.normalized and passage.details["year"] == ["2024"]
    assert passage.details["n:일"] == ["4"], "나흘 is normalized to 4일 before the details are read"
    DirectoryStore(tmp_path).put(doc)

    def refuse(*_: Any) -> Any:
        raise AssertionError("indexing analysed a passage again")

    monkeypatch.setattr(module, "normalized", refuse)
    monkeypatch.setattr(module, "analyze_normalized", refuse)
    monkeypatch.setattr(details, "extract", refuse)
    retriever = Retriever(DirectoryStore(tmp_path))  # loaded with the current analyser: nothing re-analysed
    entry = retriever._entries["trip#0"]
    assert entry.details.slots["year"] == frozenset({"2024"}) and "나흘" not in passage.normalized
    assert entry.bigrams and entry.bigrams <= module.bigrams(passage.normalized)


def test_replace_and_delete_keep_the_index_consistent() -> None:
    retriever = Retriever(MemoryStore())
    asyncio.run(retriever.upsert("a", PARKING, {"site": "suwon"}))
    asyncio.run(retriever.upsert("b", GUMI, {}))
    asyncio.run(retriever.upsert("a", "전혀 다른 내용의 문서로 교체되었습니다.", {}))
    hits = retriever.search_sync("수원 주차 등록", 4)
    assert [h.passage.doc_id for h in hits][:1] == ["b"]
    assert asyncio.run(retriever.delete("b"))
    assert all(h.passage.doc_id != "b" for h in retriever.search_sync("구미 사업장 주차", 4))
    assert len(retriever.bm25) == 1


def test_sources_explain_exact_and_semantic_matches() -> None:
    retriever = Retriever(MemoryStore())
    asyncio.run(retriever.upsert("pw", "로그인에 5회 연속 실패하면 계정이 잠기며, 비밀번호를 다시 설정해야 한다.", {}))
    asyncio.run(retriever.upsert("bus", "통근버스는 수원역에서 아침 7시 10분에 출발한다.", {}))
    best = retriever.search_sync("로그인 다섯 번 틀리면 암호는?", 1)[0]
    assert best.passage.doc_id == "pw"
    assert {"로그인", "5회"} <= set(best.matched)
    assert any(r.startswith("암호~") for r in best.related), best.related


def test_cong_vectors_reproduce_kiwi_similarities() -> None:
    ids = [t.id for t in kiwi().tokenize("부모 어른 급여 월급 사랑 알고리즘") if t.tag == "NNG"]
    space = semantic.space()
    for a in ids:
        for b in ids:
            va, vb = space.vector(a), space.vector(b)
            assert va is not None and vb is not None
            assert abs(float(va @ vb) - kiwi().morpheme_similarity(a, b)) < 1e-3
    assert semantic.space() is space, "built once per process"


def test_dense_vectors_join_the_candidates() -> None:
    vectors = {PARKING: [1.0, 0.0, 0.0], GUMI: [0.0, 1.0, 0.0], "질문": [0.0, 0.9, 0.1]}

    async def embed(texts: list[str]) -> list[list[float]] | None:
        return [vectors.get(t, [0.0, 0.0, 1.0]) for t in texts]

    retriever = Retriever(MemoryStore(), embedder=embed)
    asyncio.run(retriever.upsert("suwon", PARKING, {}))
    asyncio.run(retriever.upsert("gumi", GUMI, {}))
    # No word in common with either passage: only the dense vectors can rank them.
    hits = asyncio.run(retriever.search("질문", 2))
    assert hits[0].passage.doc_id == "gumi"
    assert np.isfinite(hits[0].score)


def test_a_cancelled_upsert_stops_its_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client left: the analysis thread stops at its next passage instead of finishing the document."""
    import sdc_orchestrator.rag.retriever as module

    retriever = Retriever(MemoryStore())
    analysed: list[int] = []
    original = module.analyze_passage

    def counting(doc_id: str, index: int, text: str, *args: Any) -> Passage:
        analysed.append(index)  # a spy: the real analysis still runs
        return original(doc_id, index, text, *args)

    monkeypatch.setattr(module, "analyze_passage", counting)
    document = PARKING * 5000  # ~600 passages

    async def cancel_soon() -> None:
        task = asyncio.create_task(retriever.upsert("big", document, {}))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the worker notices at its next passage

    asyncio.run(cancel_soon())
    done = len(analysed)
    time.sleep(0.5)
    assert len(analysed) == done, "the worker thread stopped"
    assert done < len(document) // 400, "long before the end of the document"
    assert "big" not in retriever.documents


def test_passage_vectors_reuse_slots_and_forget_removed_passages() -> None:
    from sdc_orchestrator.rag.retriever import _PassageVectors

    vectors = _PassageVectors()
    unit = np.zeros(semantic.DIM, np.float32)
    unit[0] = 1.0
    vectors.put("a", unit)
    vectors.put("b", None)  # a passage with no CoNg vector: a zero row, never a match
    vectors.drop("a")
    assert vectors.keys == [None, "b"] and not vectors.matrix[0].any()
    vectors.put("c", unit)
    assert vectors.keys == ["c", "b"], "the freed slot is reused"


def test_semantic_neighbours_follow_ingestion_and_deletion() -> None:
    retriever = Retriever(MemoryStore())
    asyncio.run(retriever.upsert("pw", "비밀번호를 잊어버리면 포털에서 다시 설정한다.", {}))
    asyncio.run(retriever.upsert("bus", "통근버스는 수원역에서 아침에 출발한다.", {}))
    q = retriever._query("암호를 잊었어요")
    assert next(key for key, _ in retriever._semantic(q.mean, 2)) == "pw#0"
    asyncio.run(retriever.delete("pw"))
    assert all(key != "pw#0" for key, _ in retriever._semantic(q.mean, 2))


def test_one_syllable_verb_stems_weigh_less() -> None:
    """나(다), 내(다): what colloquial questions are made of and formal passages rarely say (so of high idf)."""
    retriever = Retriever(MemoryStore())
    asyncio.run(retriever.upsert("lamp", "고장 난 가로등은 민원 콜센터로 신고한다.", {}))
    asyncio.run(retriever.upsert("fee", "택배 분실 보상 한도는 한 건에 50만 원이다.", {}))
    q = retriever._query("택배가 분실 나면 얼마 내요?")
    assert q.weights["나"] == q.weights["내"] == retriever.weights.light < 1.0 == q.weights["분실"]
    assert retriever.search_sync("택배가 분실 나면 얼마 내요?", 1)[0].passage.doc_id == "fee"
