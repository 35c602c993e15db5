"""Near-duplicate details (issue #27): normalization of the detail's spellings, typed extraction on both
sides, the cluster weighting and conflict cost, and corpus co-occurrence associates.

The passages here are invented for the mechanism (families of near-copies differing in one detail);
the evaluation sets are in benchmarks/data and scored by test_rag_eval.py.
"""

from __future__ import annotations

import pytest
from sdc_orchestrator.rag import cooccur, details
from sdc_orchestrator.rag.bm25 import BM25Index
from sdc_orchestrator.rag.korean import analyze, terms_text
from sdc_orchestrator.rag.normalize import Normalizer
from sdc_orchestrator.rag.retriever import Retriever, Weights, prepare
from sdc_orchestrator.rag.store import MemoryStore

NORMALIZE = Normalizer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("SX-200 장비", "SX200 장비", id="code-hyphen"),
        pytest.param("SX 200 장비는", "SX200 장비는", id="code-space"),
        pytest.param("GPU 2장", "gpu 2장", id="counter-not-a-code"),
        pytest.param("버전 2.1", "v2.1", id="version-before"),
        pytest.param("2.1 버전", "v2.1", id="version-after"),
        pytest.param("ver. 3.0", "v3", id="version-trailing-zero"),
        pytest.param("24년 7월에 바뀐", "2024년 7월에 바뀐", id="short-year-month"),
        pytest.param("'23년 규정", "2023년 규정", id="short-year-apostrophe"),
        pytest.param("2024년도 개정", "2024년 개정", id="year-do"),
        pytest.param("24시간 운영", "24시간 운영", id="hours-not-a-year"),
        pytest.param("1년 반 동안", "1년 6개월 동안", id="half-year"),
        pytest.param("두 시간 반이면", "2시간 30분이면", id="half-hour"),
        pytest.param("당일치기 출장", "1일 출장", id="day-trip"),
        pytest.param("프로덕션 서버", "prod 서버", id="environment"),
    ],
)
def test_normalize_details(text: str, expected: str) -> None:
    assert NORMALIZE(text) == expected


def _details(text: str) -> dict[str, set[str]]:
    found = details.extract(terms_text(text), NORMALIZE(text))
    return {slot: set(values) for slot, values in found.slots.items()}


def test_extract_types_the_details_on_either_side() -> None:
    assert _details("2024년 개정 규정: 보고는 나흘 안에 한다.") == {
        "year": {"2024"},
        "n:일": {"4"},
        "days": {"4"},
        "revision": {"new"},
        "recency": {"new"},
    }
    assert _details("개정 전 규정은 3년 동안 보관") == {
        "revision": {"old"},
        "recency": {"old"},
        "n:년": {"3"},
        "days": {"1095"},
    }
    assert _details("운영 환경의 SX-200 장비") == {"env": {"prod"}, "code:sx": {"200"}}
    assert _details("하루 만에 다녀오는 출장") == {"n:일": {"1"}, "days": {"1"}}
    assert _details("당일 신청") == {"n:일": {"1"}}
    assert _details("58면 여권, 6인실, 백사십 학점") == {
        "n:면": {"58"},
        "n:인": {"6"},
        "n:인실": {"6"},
        "n:학점": {"140"},
    }
    assert _details("석 달") == _details("석 달") and _details("90일간")["days"] == _details("석 달")["days"] == {"90"}
    assert _details("등록금의 2분의 1") == _details("등록금 절반") == {"pct": {"50"}}


def test_conflicting_value_costs_and_shared_words_weigh_nothing() -> None:
    query = details.extract(["보고", "기한", "4일"], "보고 기한 4일")
    terms = {"a": {"보고", "기한", "4일"}, "b": {"보고", "기한", "5일"}, "c": {"보고", "기한", "7일"}}
    found = details.discriminate(
        {"보고": 1.0, "기한": 1.0},
        query,
        terms,
        {key: details.extract(sorted(t), " ".join(sorted(t))) for key, t in terms.items()},
        total_idf=2.0,
    )
    assert found.score["a"] > 0 > found.score["b"] == found.score["c"]
    assert found.deciding["a"] == ["4일"] and not found.deciding["b"]


def test_a_value_nobody_states_costs_nothing() -> None:
    """A number in the question that no candidate has (a 4-day trip, asked of per-day rates) is no sibling
    marker: the passages stating other numbers of days are not penalized."""
    query = details.extract(["출장", "4일"], "4일 출장")
    terms = {"a": {"출장", "1일"}, "b": {"출장", "2일"}}
    found = details.discriminate(
        {"출장": 1.0},
        query,
        terms,
        {key: details.extract(sorted(t), "") for key, t in terms.items()},
        total_idf=1.0,
    )
    assert found.score == {"a": 0.0, "b": 0.0}


FAMILY = {
    "sx200": "SX200 장비의 정기 점검 주기는 3개월이며 점검 결과는 설비팀 포털에 등록한다.",
    "sx300": "SX300 장비의 정기 점검 주기는 6개월이며 점검 결과는 설비팀 포털에 등록한다.",
    "report-2023": "2023년 기준 출장 보고서는 복귀 후 7일 안에 제출하고 영수증 원본을 첨부한다.",
    "report-2024": "2024년 개정 기준 출장 보고서는 복귀 후 4일 안에 제출하고 영수증 원본을 첨부한다.",
    "deploy-prod": "운영 환경 배포는 팀장 승인을 받아 화요일과 목요일에만 진행하며 결과를 채널에 공유한다.",
    "deploy-staging": "스테이징 환경 배포는 팀장 승인을 받아 평일 언제든 진행하며 결과를 채널에 공유한다.",
    "deploy-old": "개정 전 규정: 배포 승인은 팀장이 하고 배포 결과는 메일로 보고한다.",
    "deploy-new": "개정 후 규정: 배포 승인은 변경관리 위원회가 하고 배포 결과는 포털에 등록한다.",
}


@pytest.fixture(scope="module")
def family() -> Retriever:
    retriever = Retriever(MemoryStore())
    for key, text in FAMILY.items():
        retriever._replace(prepare(key, text, {}))
    return retriever


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("SX-200 점검은 몇 달마다 하나요?", "sx200"),
        ("에스엑스 300 말고 SX 300 장비 점검 주기", "sx300"),
        ("24년 개정 기준으로 출장 보고서는 며칠 안에 내야 해요?", "report-2024"),
        ("출장 보고서를 나흘 안에 내야 하는 건 어느 기준인가요?", "report-2024"),
        ("복귀하고 일주일 안에 출장 보고서를 내던 기준은?", "report-2023"),
        ("프로덕션 배포는 언제 할 수 있나요?", "deploy-prod"),
        ("바뀐 규정에서 배포 승인은 누가 하나요?", "deploy-new"),
        ("예전 규정에서 배포 결과는 어떻게 보고했나요?", "deploy-old"),
    ],
)
def test_the_sibling_with_the_question_detail_comes_first(family: Retriever, question: str, answer: str) -> None:
    hits = family.search_sync(question, 3)
    assert hits[0].passage.doc_id == answer, [(h.passage.doc_id, h.deciding) for h in hits]


def test_hits_say_which_detail_decided(family: Retriever) -> None:
    best = family.search_sync("나흘 안에 내는 출장 보고서", 2)[0]
    assert best.passage.doc_id == "report-2024"
    assert "4일" in best.deciding, best.deciding


def test_cooccurrence_associates_come_from_the_corpus() -> None:
    index = BM25Index(terms_text)
    texts = [
        "경조휴가는 배우자 부모 사망 때 준다.",
        "경조휴가 신청은 사망 증명서를 첨부한다.",
        "경조휴가 5일은 유급이다.",
        "주차 등록은 포털에서 한다.",
        "주차 요금은 하루 5000원이다.",
    ]
    for i, text in enumerate(texts):
        index.add(str(i), text)
    found = cooccur.associates(index, ["경조", "주차"], top=3, min_npmi=0.3, min_count=2)
    assert "사망" in dict(found["경조"])
    assert all(not any(ch.isdigit() for ch in word) for pairs in found.values() for word, _ in pairs)
    assert "주차" not in found or "사망" not in dict(found["주차"])


def test_cooccurrence_expansion_reaches_an_associated_passage() -> None:
    retriever = Retriever(MemoryStore(), weights=Weights(cooccur=0.5, cooccur_npmi=0.3, semantic=0.0))
    for key, text in {
        "a": "경조휴가는 배우자 부모 사망 때 준다.",
        "b": "경조휴가 신청은 사망 증명서를 첨부한다.",
        "c": "사망 신고는 인사팀에 한다.",
        "d": "주차 등록은 포털에서 한다.",
    }.items():
        retriever._replace(prepare(key, text, {}))
    q = retriever._query("경조휴가 며칠")
    assert "사망" in q.weights and q.expanded_from["사망"] in {t.text for t in analyze("경조휴가")}


def test_extract_reads_the_largest_or_smallest_asked_for() -> None:
    assert _details("가장 큰 회의실")["extreme"] == {"max"}
    assert _details("제일 여럿이 쓰는 방")["extreme"] == {"max"}
    assert _details("제일 작은 모델")["extreme"] == {"min"}
    assert _details("가장 싼 요금제") == {"extreme": {"min"}, "extreme_of": {"price"}}
    assert "extreme" not in _details("최대 50만 원까지 보상한다")  # a limit, not one of a family


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("max", False, {"large"}),  # most seats and the most screens
        ("min", False, {"small"}),
        ("max", True, {"large"}),  # money alone decides a price question
        ("min", True, {"medium"}),
    ],
)
def test_the_extreme_member_of_a_family(side: str, price: bool, expected: set[str]) -> None:
    rooms = {
        "small": {"n:명": {"4"}, "n:대": {"1"}, "n:원": {"20000"}},
        "medium": {"n:명": {"8"}, "n:대": {"1"}, "n:원": {"10000"}},
        "large": {"n:명": {"20"}, "n:대": {"2"}, "n:원": {"50000"}},
    }
    found = {key: details.Details.from_lists(slots) for key, slots in rooms.items()}
    assert details._extreme(found, side, price) == expected


SIZES = {
    "room-s": "소회의실은 최대 4명이 쓸 수 있고 사내 포털에서 하루 전까지 예약한다.",
    "room-m": "중회의실은 최대 8명이 쓸 수 있고 사내 포털에서 이틀 전까지 예약한다.",
    "room-l": "대회의실은 최대 20명이 쓸 수 있고 총무팀에 사흘 전까지 신청해 예약한다.",
    "car": "업무용 차량은 최대 5명이 탈 수 있고 사내 포털에서 하루 전까지 예약한다.",
}


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("가장 많이 들어가는 회의실은 어떻게 예약하나요?", "room-l"),
        ("제일 작은 회의실은 언제까지 예약해요?", "room-s"),
    ],
)
def test_the_largest_or_smallest_sibling_comes_first(question: str, answer: str) -> None:
    retriever = Retriever(MemoryStore())
    for key, text in SIZES.items():
        retriever._replace(prepare(key, text, {}))
    hits = retriever.search_sync(question, 3)
    assert hits[0].passage.doc_id == answer, [(h.passage.doc_id, h.deciding) for h in hits]
    assert ("가장 큰" if answer == "room-l" else "가장 작은") in hits[0].deciding
