"""The Korean prompt that puts retrieved passages in front of the model."""

from __future__ import annotations

from sdc_orchestrator.rag.retriever import Hit

SYSTEM = (
    "당신은 SDC 문서 도우미입니다. 아래 '문맥'에 있는 내용만 근거로 한국어로 정확하고 간결하게 답하세요. "
    "문맥에 답이 없으면 지어내지 말고 '제공된 문서에서 답을 찾을 수 없습니다.'라고 말하세요. "
    "가능하면 근거가 된 문맥 번호를 [1]처럼 표시하세요."
)
NO_CONTEXT_SYSTEM = "당신은 SDC 문서 도우미입니다. 사용자의 질문에 한국어로 정확하고 간결하게 답하세요."


def rag_messages(question: str, hits: list[Hit], extra_context: str | None = None) -> list[dict[str, str]]:
    blocks = [f"[{i}] {hit.passage.text}" for i, hit in enumerate(hits, 1)]
    if extra_context:
        blocks.append(f"[{len(blocks) + 1}] {extra_context}")
    if not blocks:
        return [{"role": "system", "content": NO_CONTEXT_SYSTEM}, {"role": "user", "content": question}]
    context = "\n".join(blocks)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"문맥:\n{context}\n\n질문: {question}"}]
