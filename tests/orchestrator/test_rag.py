"""Korean retrieval: documents in, sources out; Kiwi BM25 against whitespace BM25."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sdc_orchestrator.rag.bm25 import BM25Index
from sdc_orchestrator.rag.korean import morphemes, whitespace_tokens

from tests.support.fake_openai import FakeBackend

CORPUS = {
    "seoul": "서울은 대한민국의 수도이며 가장 큰 도시입니다. 한강이 도시를 가로질러 흐릅니다.",
    "busan": "부산은 대한민국 제2의 도시로, 대표적인 항구 도시입니다. 해운대 해수욕장이 유명합니다.",
    "ktx": "KTX는 한국의 고속철도로, 서울에서 부산까지 약 2시간 30분이 걸립니다.",
    "kimchi": "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식입니다. 겨울에 김장을 합니다.",
    "gpu": "쿠버네티스 클러스터에서 GPU 노드에 언어 모델을 배포하려면 nvidia.com/gpu 자원을 요청해야 합니다.",
    "jeju": "제주도는 화산섬으로 한라산이 있으며, 감귤이 특산물입니다.",
    "hangul": "한글은 세종대왕이 창제했으며 1446년에 훈민정음으로 반포되었습니다.",
    "vacation": "연차 휴가는 입사 1년 후 15일이 주어지며, 사용하지 않은 휴가는 다음 해로 이월되지 않습니다.",
}
QUESTIONS = {
    "대한민국의 수도는 어디인가요?": "seoul",
    "해운대가 있는 항구도시는?": "busan",
    "고속철도로 부산까지 얼마나 걸려?": "ktx",
    "김장은 언제 하나요?": "kimchi",
    "GPU를 요청하려면 어떤 자원을 써야 하나요?": "gpu",
    "한라산이 있는 섬은?": "jeju",
    "훈민정음을 반포한 해는?": "hangul",
    "연차를 이월할 수 있나요?": "vacation",
}


def hits_at_1(tokenizer: Callable[[str], list[str]]) -> int:
    index = BM25Index(tokenizer)
    for key, text in CORPUS.items():
        index.add(key, text)
    return sum(1 for q, want in QUESTIONS.items() if (index.search(q, 1) or [("", 0)])[0][0] == want)


def test_kiwi_bm25_beats_whitespace_bm25() -> None:
    kiwi, naive = hits_at_1(morphemes), hits_at_1(whitespace_tokens)
    print(f"\nhit@1 on {len(QUESTIONS)} Korean questions: Kiwi BM25 {kiwi}, whitespace BM25 {naive}")
    assert kiwi >= 7
    assert kiwi > naive


def test_documents_ground_the_answer_and_come_back_as_sources(
    orchestrator: Callable[..., str], backends: dict[str, tuple[FakeBackend, str]]
) -> None:
    base = orchestrator()
    docs = [{"id": key, "text": text, "metadata": {"title": key}} for key, text in CORPUS.items()]
    assert httpx.post(f"{base}/api/v1/documents", json=docs, timeout=60).status_code == 200
    body = httpx.post(
        f"{base}/api/v1/chat", json={"message": "해운대가 있는 항구도시는?", "provider": "vllm"}, timeout=30
    ).json()
    assert body["sources"][0]["id"] == "busan"
    assert "해운대" in body["sources"][0]["text"]
    assert "해운대" in body["sources"][0]["matched"], "sources say which question terms they matched"
    prompt = backends["vllm"][0].last_request["messages"]
    assert "문맥" in prompt[-1]["content"] and "해운대" in prompt[-1]["content"]
    assert "찾을 수 없습니다" in prompt[0]["content"]
    # Same id replaces; delete removes.
    httpx.post(f"{base}/api/v1/documents", json={"id": "busan", "text": "부산 문서는 교체되었습니다."}, timeout=30)
    assert httpx.delete(f"{base}/api/v1/documents/busan").status_code == 200
    assert httpx.delete(f"{base}/api/v1/documents/busan").status_code == 404
    body = httpx.post(
        f"{base}/api/v1/chat", json={"message": "해운대가 있는 항구도시는?", "provider": "vllm"}, timeout=30
    ).json()
    assert all(s["id"] != "busan" for s in body["sources"])


def test_documents_persist_across_restart(orchestrator: Callable[..., str]) -> None:
    first = orchestrator()
    httpx.post(f"{first}/api/v1/documents", json={"id": "jeju", "text": CORPUS["jeju"]}, timeout=30)
    second = orchestrator()  # same data directory
    body = httpx.post(f"{second}/api/v1/chat", json={"message": "한라산이 있는 섬은?"}, timeout=30).json()
    assert [s["id"] for s in body["sources"]] == ["jeju"]


def test_dense_retrieval_fuses_when_an_embedder_is_configured(
    orchestrator: Callable[..., str], backends: dict[str, tuple[FakeBackend, str]]
) -> None:
    base = orchestrator(sdc_embedding_base_url=backends["ollama"][1] + "/v1", sdc_embedding_model="emb")
    httpx.post(f"{base}/api/v1/documents", json=[{"id": k, "text": v} for k, v in CORPUS.items()], timeout=60)
    body = httpx.post(f"{base}/api/v1/chat", json={"message": "부산 항구"}, timeout=30).json()
    assert body["sources"][0]["id"] == "busan"
    embedded = backends["ollama"][0].embedded
    assert "부산 항구" in embedded, "the question was embedded for dense retrieval"
    assert sum(1 for text in embedded if text != "부산 항구") >= len(CORPUS), "every passage has a vector"
    # The vectors decide a ranking: "구항" shares no word with Busan's passage, but its vector (the fake embeds
    # character counts) is nearest Busan's. Without the dense signal Busan is not among the sources.
    body = httpx.post(f"{base}/api/v1/chat", json={"message": "구항"}, timeout=30).json()
    assert "busan" in [s["id"] for s in body["sources"]], body["sources"]
    lexical_only = orchestrator()  # the same documents, no embedder
    body = httpx.post(f"{lexical_only}/api/v1/chat", json={"message": "구항"}, timeout=30).json()
    assert "busan" not in [s["id"] for s in body["sources"]], body["sources"]
