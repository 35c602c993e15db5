"""The workplace thesaurus: parsing, when a group fires, and what the retriever makes of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sdc_orchestrator.rag import thesaurus
from sdc_orchestrator.rag.korean import analyze
from sdc_orchestrator.rag.retriever import Retriever, Weights
from sdc_orchestrator.rag.store import MemoryStore


def _terms(text: str) -> set[str]:
    return {t.text for t in analyze(text)}


def test_lines_are_analysed_like_questions() -> None:
    (group,) = thesaurus.parse("그만두다 | 집 일 = 퇴사 체력단련실  # a comment\n# only a comment\nno equals sign")
    assert group.triggers == (frozenset({"그만두"}), frozenset({"집", "일"}))
    assert group.related[0] == ("퇴사",)
    # A compound Kiwi splits keeps its parts and joined pairs, as passages are indexed.
    assert {"체력", "단련", "체력단련"} <= set(group.related[1])


@pytest.mark.parametrize(
    ("question", "fires", "adds"),
    [
        ("회사를 그만두려면 언제 말해야 하나요?", {"그만두"}, "퇴사"),
        ("장인어른이 돌아가시면 휴가는?", {"장인어른"}, "배우자"),
        ("집에서 일하는 날 규칙", {"집", "일"}, "재택근무"),
        ("암호를 잊어버렸어요", {"암호"}, "비밀번호"),
    ],
    ids=["verb-stem", "kinship-hypernym", "two-word-trigger", "native-word"],
)
def test_a_group_fires_on_all_of_its_words(question: str, fires: set[str], adds: str) -> None:
    fired = thesaurus.expand(_terms(question))
    assert any(trigger == fires and any(adds in word for word in words) for trigger, words in fired), fired


def test_a_multi_word_trigger_needs_every_word() -> None:
    # 집 alone (a house) is not 집에서 일하다 (working from home).
    assert not any("재택근무" in w for _, words in thesaurus.expand(_terms("집을 구해 주나요?")) for w in words)


def test_a_deployment_file_extends_the_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "thesaurus.txt"
    extra.write_text("깃랩 러너 = 빌드 서버\n", encoding="utf-8")
    monkeypatch.setenv("SDC_RAG_THESAURUS_FILE", str(extra))
    thesaurus.groups.cache_clear()
    thesaurus._by_word.cache_clear()
    try:
        assert any(("빌드",) in words for _, words in thesaurus.expand(_terms("깃랩 러너가 멈췄어요")))
    finally:
        monkeypatch.delenv("SDC_RAG_THESAURUS_FILE")
        thesaurus.groups.cache_clear()
        thesaurus._by_word.cache_clear()


def test_retriever_finds_the_formal_passage_and_says_why() -> None:
    def build(weights: Weights) -> Retriever:
        retriever = Retriever(MemoryStore(), weights=weights)
        asyncio.run(retriever.upsert("resign", "퇴사하려는 직원은 예정일 30일 전까지 사직서를 제출한다.", {}))
        asyncio.run(retriever.upsert("books", "업무 관련 도서는 회사 비용으로 구입할 수 있다.", {}))
        asyncio.run(retriever.upsert("side", "겸업은 회사의 사전 승인을 받아야 한다.", {}))
        return retriever

    question = "회사를 그만두려면 얼마나 미리 말해야 하나요?"
    best = build(Weights())
    hit = best.search_sync(question, 1)[0]
    assert hit.passage.doc_id == "resign"
    assert "그만두~퇴사" in hit.related, hit.related
    without = build(Weights(thesaurus=0.0, thesaurus_cover=0.0)).search_sync(question, 1)[0]
    assert without.passage.doc_id != "resign", "the thesaurus is what finds it"


def _lexicon_lines() -> list[tuple[str, str]]:
    lines = []
    for raw in thesaurus.LEXICON.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            left, _, right = line.partition("=")
            lines.append((left, right))
    return lines


def test_every_lexicon_line_is_a_group() -> None:
    """A line Kiwi reads as nothing would be dropped silently: each one must parse to a group."""
    lines = _lexicon_lines()
    assert all(right for _, right in lines), "every line has `=` and a right-hand side"
    assert len(lines) >= 300
    assert len(thesaurus.groups(builtin=False, lexicon=True)) == len(lines)


# Forms the normalizer itself maps to one token (numbers, loanwords): the only several-word
# forms allowed to become a one-word trigger.
NORMALIZED = {"한 사람": {"1명"}, "일회용 비밀번호": {"otp"}}


def test_lexicon_forms_keep_their_words() -> None:
    """A several-word form that Kiwi reduces to one common word (아무 데 세우다 -> 세우) would fire on
    every question with that word; a right-hand word Kiwi reads as nothing adds nothing."""
    for left, right in _lexicon_lines():
        for form in (f.strip() for f in left.split("|")):
            terms = {t.text for t in analyze(form) if not t.joined}
            assert terms, form
            if len(form.split()) > 1 and len(terms) < 2:
                assert NORMALIZED.get(form) == terms, (form, terms)
        for word in right.split():
            assert thesaurus._word_terms(word), (word, right)


@pytest.mark.parametrize(
    ("question", "fires", "adds"),
    [
        ("상을 당하면 휴가가 나오나요?", {"상", "당하"}, "사망"),
        ("쌍둥이를 가졌을 때 휴가는?", {"쌍둥이"}, "다태아"),
        ("한 사람에 얼마까지 되나요?", {"1명"}, "1인"),
        ("서버 포트를 열어야 해요", {"포트", "열"}, "방화벽"),
        ("부업을 해도 되나요?", {"부업"}, "겸업"),
    ],
    ids=["idiom", "everyday-noun", "counter-after-normalizing", "two-word-trigger", "register"],
)
def test_the_lexicon_maps_everyday_words_to_policy_terms(question: str, fires: set[str], adds: str) -> None:
    fired = thesaurus.expand(_terms(question), builtin=False, lexicon=True)
    assert any(trigger == fires and any(adds in word for word in words) for trigger, words in fired), fired


def test_the_lexicon_weighs_less_than_the_groups_and_shows_in_sources() -> None:
    """Its terms join the query at `lexicon_weight` of a hand-written group's, and a hit says why."""

    def build(weights: Weights) -> Retriever:
        retriever = Retriever(MemoryStore(), weights=weights)
        asyncio.run(retriever.upsert("side", "겸업은 회사의 사전 승인을 받아야 하며 경쟁사 관련 겸업은 안 된다.", {}))
        asyncio.run(retriever.upsert("books", "업무 관련 도서는 회사 비용으로 구입할 수 있다.", {}))
        asyncio.run(retriever.upsert("trip", "출장비 가지급금은 출발 3일 전까지 신청할 수 있다.", {}))
        return retriever

    question = "회사 다니면서 부업을 해도 되나요?"
    hit = build(Weights()).search_sync(question, 1)[0]
    assert hit.passage.doc_id == "side"
    assert "부업~겸업" in hit.related, hit.related
    without = build(Weights(lexicon=False)).search_sync(question, 3)
    assert "부업~겸업" not in [r for h in without for r in h.related]
    assert build(Weights(lexicon_weight=0.5))._query(question).weights["겸업"] == pytest.approx(0.5)
