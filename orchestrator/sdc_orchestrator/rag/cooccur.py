"""Query expansion learned from the deployment's own documents: words that co-occur with the question's.

Why: the thesaurus and the lexicon are lists someone wrote for one domain; a customer's documents
use their own vocabulary. What the ingested passages themselves say is which words go together:
a policy's passages put 경조휴가 next to 사망, 배우자, 부모; 반납 next to 퇴사, 노트북, 출입카드.
When a question uses one word of such a pair, its associates are likely in the passage it wants.

How: normalized pointwise mutual information between a question word t and every word u of the
passages that contain t, counted from the BM25 index's own postings and per-passage term counts
(`BM25Index.postings`, `BM25Index.docs`), so it costs nothing at ingestion (no extra index, nothing
grows with the square of the vocabulary) and is always current after an upsert or a delete. At search
it reads the passages of each question word, at most `max_df` of them (a word in more passages is too
common to point anywhere), so a question costs at most (question words x max_df x words per passage)
counter updates: about a millisecond at 10,000 passages.

npmi(t, u) = log(p(t, u) / (p(t) p(u))) / -log p(t, u), in [-1, 1]: 1 when u occurs exactly where t does.
Associates must co-occur in at least `min_count` passages, so one passage alone does not make a pair.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from sdc_orchestrator.rag.bm25 import BM25Index

# Numbers, codes and Latin/digit mixes are details, not topic words: never expanded to or from.
_NOT_A_WORD = re.compile(r"\d")


def associates(
    index: BM25Index,
    words: Iterable[str],
    top: int = 3,
    min_npmi: float = 0.5,
    min_count: int = 2,
    max_df: int = 50,
) -> dict[str, list[tuple[str, float]]]:
    """For each question word found in the index: up to `top` (word, npmi) associates, best first."""
    n = len(index)
    out: dict[str, list[tuple[str, float]]] = {}
    if n < 2:
        return out
    slot_key = index._keys  # slot -> passage key
    for word in words:
        postings = index.postings.get(word)
        if not postings or len(postings) > max_df or _NOT_A_WORD.search(word):
            continue
        together: Counter[str] = Counter()
        for slot in postings:
            key = slot_key[slot]
            if key is not None:
                together.update(index.docs[key].keys())
        df_t = len(postings)
        scored = []
        for other, count in together.items():
            if other == word or count < min_count or _NOT_A_WORD.search(other):
                continue
            p_tu = count / n
            if p_tu >= 1:
                continue
            npmi = math.log(p_tu / ((df_t / n) * (index.df(other) / n))) / -math.log(p_tu)
            if npmi >= min_npmi:
                scored.append((other, npmi))
        if scored:
            scored.sort(key=lambda pair: -pair[1])
            out[word] = scored[:top]
    return out
