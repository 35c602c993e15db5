"""Query rewriting by the served LLM for weak questions (issue #27, item 2; SDC_RAG_REWRITE, off by default).

The corpus and questions are invented for the mechanism: a question that shares no word with its passage
(띠 모양 물집 병 for 대상포진) finds it among its sources once the model names the thing (the index's best hit
keeping first place); a question the index answers well is never sent to the model. Over real loopback HTTP, the chat's backend is a real server that answers the
rewrite request like any other chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from sdc_orchestrator.rag import rewrite
from sdc_orchestrator.rag.retriever import Retriever, prepare
from sdc_orchestrator.rag.store import MemoryStore

from tests.support.fake_openai import FakeBackend
from tests.support.metrics import scrape

PASSAGES = {
    "shingles": "대상포진 예방접종 비용은 만 50세 이상 임직원에게 회사가 전액 지원한다.",
    "flu": "독감 예방접종은 매년 10월 사내 의무실에서 무료로 실시하며 가족도 신청할 수 있다.",
    "checkup": "정기 건강검진은 2년마다 지정 병원에서 받으며 검진 당일은 공가로 처리한다.",
    "streetlight": "주차장 가로등이 고장 나면 시설팀에 신고하고 수리는 사흘 안에 끝낸다.",
    "dental": "치과 치료비는 연 100만 원까지 복지포인트로 지원한다.",
    "eyes": "안경 구입비는 2년에 한 번 20만 원까지 지원한다.",
    "gym": "사내 체력단련실은 평일 오전 7시부터 밤 10시까지 연다.",
    "vpn": "재택근무 중에는 사내 VPN으로 접속하고 공용 와이파이는 쓰지 않는다.",
}
WEAK = "띠 모양 물집 병"  # shares no word with the shingles passage
STRONG = "대상포진 예방접종 지원"
REWRITE = "검색어: 대상포진 예방접종"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("검색어: 대상포진 예방접종", "대상포진 예방접종"),
        ('"대상포진 예방접종 비용"', "대상포진 예방접종 비용"),
        ("Query: 가로등 고장 신고", "가로등 고장 신고"),
        ("\n\n- 가로등 고장\n설명: 길에 불이 안 들어오는 것은 가로등 고장입니다.", "가로등 고장"),
        ("", None),
        ("  \n ** \n", None),
        ("?!", None),
        ("띠 모양  물집병", None),  # the question again, spaced differently: nothing to add
        ("가" * (rewrite.MAX_REWRITE_CHARS + 1), None),  # a rambling answer, not a query
        ("곅\ufffdsw\ufffd.대상포진", None),  # broken UTF-8 from the model: noise, not a query
        ("대상포진 ###@@@!!!", None),  # mostly symbols
        ("VPN 2.1 버전", "VPN 2.1 버전"),
    ],
)
def test_parse_rewrite_reads_one_query_line(answer: str, expected: str | None) -> None:
    assert rewrite.parse_rewrite(answer, WEAK) == expected


def _retriever() -> Retriever:
    retriever = Retriever(MemoryStore())
    for key, text in PASSAGES.items():
        retriever._replace(prepare(key, text, {}, retriever.weights))
    return retriever


def test_a_weak_question_is_searched_again_with_the_models_rewrite() -> None:
    retriever = _retriever()
    asked: list[list[dict[str, str]]] = []

    async def ask(messages: list[dict[str, str]]) -> str | None:
        asked.append(messages)
        return REWRITE

    plain, none = asyncio.run(rewrite.search(retriever, WEAK, 4, None))
    assert none is None and "shingles" not in [h.passage.doc_id for h in plain]
    hits, used = asyncio.run(rewrite.search(retriever, WEAK, 4, ask))
    assert used == "대상포진 예방접종"
    # The index's best hit keeps first place; the rewrite brings the passage into the top k, next.
    assert [h.passage.doc_id for h in hits[:2]] == [plain[0].passage.doc_id, "shingles"]
    assert len(hits) == 4 and len({h.passage.doc_id for h in hits}) == 4
    assert asked == [rewrite.rewrite_messages(WEAK)] and asked[0][-1] == {"role": "user", "content": WEAK}


def test_a_strong_question_or_a_failed_rewrite_keeps_the_first_ranking() -> None:
    retriever = _retriever()
    calls = 0

    async def ask(messages: list[dict[str, str]]) -> str | None:
        nonlocal calls
        calls += 1
        return REWRITE

    async def failed(messages: list[dict[str, str]]) -> str | None:
        return None

    def ids(question: str, asker: rewrite.Ask | None) -> list[str]:
        return [h.passage.doc_id for h in asyncio.run(rewrite.search(retriever, question, 4, asker))[0]]

    assert ids(STRONG, ask) == ids(STRONG, None) and ids(STRONG, None)[0] == "shingles"
    assert calls == 0  # the index answered it: the model is not asked
    assert ids(WEAK, failed) == ids(WEAK, None)


def test_chat_rewrites_a_weak_question_through_the_chats_model(
    orchestrator: Callable[..., str], backends: dict[str, tuple[FakeBackend, str]]
) -> None:
    base = orchestrator(sdc_rag_rewrite=True, llm_fallback="none")
    docs = [{"id": key, "text": text} for key, text in PASSAGES.items()]
    assert httpx.post(f"{base}/api/v1/documents", json=docs, timeout=60).status_code == 200
    vllm = backends["vllm"][0]
    vllm.answer = REWRITE
    answered = scrape(f"{base}/metrics", "sdc_orchestrator_rag_rewrites_total", outcome="answered")

    resp = httpx.post(f"{base}/api/v1/chat", json={"message": WEAK, "provider": "vllm"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert [s["id"] for s in resp.json()["sources"]][1] == "shingles"
    first, chat = vllm.requests[-2:]
    assert first["messages"] == rewrite.rewrite_messages(WEAK)
    assert first["max_tokens"] == rewrite.MAX_TOKENS and first["temperature"] == 0
    assert "대상포진 예방접종 비용은" in chat["messages"][0]["content"] + chat["messages"][-1]["content"]
    assert scrape(f"{base}/metrics", "sdc_orchestrator_rag_rewrites_total", outcome="answered") - answered == 1

    before = len(vllm.requests)
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": STRONG, "provider": "vllm"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["sources"][0]["id"] == "shingles"
    assert len(vllm.requests) - before == 1  # the chat only: a strong question is not rewritten


def test_chat_answers_when_the_rewrite_fails(
    orchestrator: Callable[..., str], backends: dict[str, tuple[FakeBackend, str]]
) -> None:
    base = orchestrator(sdc_rag_rewrite=True, sdc_rag_rewrite_timeout_s=0.3, llm_fallback="none")
    docs = [{"id": key, "text": text} for key, text in PASSAGES.items()]
    assert httpx.post(f"{base}/api/v1/documents", json=docs, timeout=60).status_code == 200
    failed = scrape(f"{base}/metrics", "sdc_orchestrator_rag_rewrites_total", outcome="failed")
    backends["vllm"][0].delay_s = 0.6  # past the rewrite's 0.3 s, within the chat's own timeout
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": WEAK, "provider": "vllm"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"].startswith("vllm 답변")
    assert "shingles" not in [s["id"] for s in resp.json()["sources"]]  # searched as asked
    assert scrape(f"{base}/metrics", "sdc_orchestrator_rag_rewrites_total", outcome="failed") - failed == 1
