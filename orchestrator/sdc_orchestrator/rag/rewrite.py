"""Query rewriting by the served LLM, for weak questions only (issue #27, item 2; off by default).

A paraphrase that shares no word with its passage (띠처럼 물집이 생기는 병 for 대상포진) needs knowledge
that neither the index nor Kiwi's vectors hold; a served LLM has it. When `SDC_RAG_REWRITE` is on, a
question whose best hit holds less than `Weights.weak` of it (`Retriever.search_judged`: the same gate as the
feedback pass) is sent to the chat model once, asking for a search query in the documents' own terms, and
is searched again as the question followed by that query (query expansion as in Query2doc). The first
pass's best hit keeps first place and the expanded search fills the rest of the top k, as the feedback pass
does (`Weights.prf_keep`): the rewrite is there for recall, the k passages the model answers from.

Measured without a real model (`benchmarks/rewrite_eval.py --simulate`, heldout3's dev half, hit@1 / hit@5):
a rewrite that names the right passage's subject takes 0.91 / 0.97 to 0.91 / 1.00 this way, and to 0.99 /
1.00 if it may also reorder the top; one that names another passage's subject costs 0.91 / 0.94 this way,
but 0.64 / 0.92 if it may reorder the top. Until a real model shows its rewrites are that reliable, the top
stays the index's. Reciprocal-rank fusion of the two rankings was tried first and dropped: on a small
corpus every passage is in both rankings, and the weak first ranking outvoted the passage only the rewrite
found. Any failure of the rewrite (no model, a timeout, an empty or unusable answer) leaves the first
ranking as it was.

Pure here (the prompt, reading the answer, the expanded query); the call to the model is the caller's (`Ask`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from sdc_orchestrator.rag.retriever import Hit, Retriever

Ask = Callable[[list[dict[str, str]]], Awaitable[str | None]]  # messages -> the model's answer, None on failure

MAX_REWRITE_CHARS = 300
MAX_TOKENS = 64

SYSTEM = (
    "당신은 사내 문서 검색을 돕습니다. 사용자의 질문을 문서에서 찾기 좋은 검색어로 바꿔 쓰세요. "
    "질문이 돌려 말하거나 풀어 쓴 대상은 문서에 쓰일 정식 용어로 밝혀 쓰고, 숫자와 날짜는 그대로 두세요. "
    "질문에 답하지 말고 검색어만 한 줄로 쓰세요."
)
_LABEL = re.compile(r"^\s*(?:검색어|검색 ?쿼리|쿼리|query|search query|rewritten(?: query)?)\s*[:：]\s*", re.IGNORECASE)
_WRAP = "\"'`“”‘’「」『』*#- \t"
_WORD = re.compile(r"[가-힣A-Za-z0-9]")
LEGIBLE_SHARE = 0.7  # of the non-space characters: Hangul, Latin letters and digits


def _legible(text: str) -> bool:
    """Not mojibake: no replacement or control character, mostly letters and digits. A model that emits
    broken UTF-8 or stray symbols (measured: sdc-runtime's random tiny model) would add noise terms that
    cost the questions it touches (heldout3 dev hit@5 0.97 -> 0.95 without this check; it refuses all 44)."""
    chars = [c for c in text if not c.isspace()]
    if any(c == "\ufffd" or ord(c) < 32 for c in text):
        return False
    return sum(bool(_WORD.match(c)) for c in chars) >= LEGIBLE_SHARE * len(chars)


def rewrite_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def parse_rewrite(answer: str, question: str) -> str | None:
    """The model's answer as a query: its first non-empty line, without a label or quotes; None when nothing
    usable is left (empty, no letter or digit, the question itself) or it is implausibly long."""
    line = next((ln for ln in answer.splitlines() if ln.strip(_WRAP)), "")
    text = _LABEL.sub("", line).strip(_WRAP)
    if not _WORD.search(text) or len(text) > MAX_REWRITE_CHARS or not _legible(text):
        return None
    if text.replace(" ", "") == question.replace(" ", ""):
        return None
    return text


async def search(retriever: Retriever, question: str, k: int, ask: Ask | None) -> tuple[list[Hit], str | None]:
    """The hits for `question`; when it is weak, its best hit first, then the search of it expanded with the
    model's rewrite; and the rewrite used (None: not asked, or nothing usable came back)."""
    if ask is None:
        return await retriever.search(question, k), None
    hits, weak = await retriever.search_judged(question, k)
    if not weak:
        return hits, None
    answer = await ask(rewrite_messages(question))
    rewritten = parse_rewrite(answer, question) if answer else None
    if rewritten is None:
        return hits, None
    again = await retriever.search(expanded(question, rewritten), k)
    return [hits[0], *(h for h in again if h.passage.key != hits[0].passage.key)][:k], rewritten


def expanded(question: str, rewritten: str) -> str:
    return f"{question}\n{rewritten}"
