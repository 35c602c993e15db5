"""Normalization and analysis, table-tested: what must match, and what must stay untouched."""

from __future__ import annotations

import pytest
from sdc_orchestrator.rag.korean import analyze, blocks, chunk
from sdc_orchestrator.rag.normalize import Normalizer, parse_numeral

NORMALIZE = Normalizer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("경조휴가 닷새", "경조휴가 5일", id="day-word"),
        pytest.param("수습 기간이 석 달", "수습 기간이 3개월", id="native-months"),
        pytest.param("한 해에 스무 권까지", "1년에 20권까지", id="native-count"),
        pytest.param("다섯 번 연속", "5회 연속", id="times"),
        pytest.param("수당 오만 원", "수당 50000원", id="sino-money"),
        pytest.param("일비 2만 5천 원", "일비 25000원", id="mixed-money"),
        pytest.param("식대 만 이천 원", "식대 12000원", id="man-alone"),
        pytest.param("50,000원", "50000원", id="commas"),
        pytest.param("이십오 메가까지", "25mb까지", id="data-size"),
        pytest.param("일주일을 넘으면", "7일을 넘으면", id="week"),
        pytest.param("오후 여섯 시에", "오후 18시에", id="clock"),
        pytest.param("2024.07에 바뀐", "2024년 7월에 바뀐", id="date"),
        pytest.param("반년 안에", "6개월 안에", id="half-year"),
        pytest.param("연차는 이월할 수 있다", "연차는 이월할 수 있다", id="iwol-is-carry-over"),
        pytest.param("사원 이번 달 일시", "사원 이번 달 일시", id="sino-syllables-untouched"),
        pytest.param("세대 교체", "세대 교체", id="se-dae-is-generation"),
        pytest.param("쿠버네티스 파드", "kubernetes pod", id="loanword"),
        pytest.param("CrashLoopBackOff", "crashloopbackoff", id="latin-case"),
        pytest.param("공용 비번", "공용 비밀번호", id="abbreviation"),
        pytest.param("Wi-Fi 와이파이", "wifi wifi", id="hyphen"),
        pytest.param("택배 한 건당 두 통", "택배 1건당 2통", id="cases-and-copies"),
        pytest.param("이 건은 보류", "이 건은 보류", id="i-geon-is-this-case"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert NORMALIZE(text) == expected


@pytest.mark.parametrize(
    ("numeral", "value"),
    [("1만 2천", 12000), ("만 이천", 12000), ("십사", 14), ("오백만", 5_000_000), ("1천만", 10_000_000), ("2.5", 2.5)],
)
def test_parse_numeral(numeral: str, value: float) -> None:
    assert parse_numeral(numeral) == value


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("연차휴가를 신청", "연차 휴가 신청", id="compound-spacing"),
        pytest.param("재택근무 규정", "재택 근무 규정", id="single-token-compound"),
        pytest.param("석 달 동안", "3개월 동안", id="number-words"),
        pytest.param("쿠버네티스 클러스터", "Kubernetes 클러스터", id="loanword"),
        pytest.param("ThinkPad T14", "씽크패드 T14", id="model-number"),
    ],
)
def test_analysis_matches_both_spellings(a: str, b: str) -> None:
    shared = {t.text for t in analyze(a)} & {t.text for t in analyze(b)}
    assert len(shared) >= 2, (a, b, shared)


def test_number_and_unit_merge_into_one_token() -> None:
    terms = {t.text for t in analyze("수습 기간은 3개월, 첨부는 25MB, A100 GPU 8장")}
    assert {"3개월", "25mb", "a100", "8장"} <= terms


def test_blocks_bound_every_piece_and_keep_all_text() -> None:
    text = ("가나다라 " * 3000) + "끝." + ("마바사" * 5000)  # one huge line without a break, then no spaces
    pieces = list(blocks(text, 2000))
    assert all(len(p) <= 2000 for p in pieces)
    assert "".join(pieces) == text


def test_chunk_keeps_whole_sentences_under_the_limit() -> None:
    text = "첫 번째 문장입니다. 두 번째 문장이에요! 세 번째 문장인가요? " * 40
    chunks = chunk(text, max_chars=200)
    assert len(chunks) > 5
    assert all(len(c) <= 260 for c in chunks)
    assert chunk("") == []
