"""Kiwi, the Korean morphological analyser, behind two small functions.

Why morphemes: Korean attaches particles and endings to words (서울은, 서울의,
서울에서), so whitespace tokens rarely match between a question and a passage.
Kiwi splits them into stems and keeps the content-bearing parts (nouns, verb
and adjective stems, roots, foreign words, numbers). Kiwi loads its model once
(a second or two); the instance is shared and thread-safe for analysis.
"""

from __future__ import annotations

import functools
import re
from typing import Any

CONTENT_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "SL", "SH", "SN", "MAG")


@functools.cache
def kiwi() -> Any:
    from kiwipiepy import Kiwi

    return Kiwi()


def morphemes(text: str) -> list[str]:
    """Content morphemes of `text`, lower-cased; foreign words and numbers kept whole."""
    return [tok.form.lower() for tok in kiwi().tokenize(text) if tok.tag.startswith(CONTENT_TAGS)]


def whitespace_tokens(text: str) -> list[str]:
    """The naive baseline the retrieval test compares against."""
    return [t for t in re.split(r"[\s.,!?;:()\"'\[\]]+", text.lower()) if t]


def sentences(text: str) -> list[str]:
    return [s.text.strip() for s in kiwi().split_into_sents(text) if s.text.strip()]


def chunk(text: str, max_chars: int = 400, overlap_sentences: int = 1) -> list[str]:
    """Group whole sentences into passages of at most ~max_chars, overlapping by a sentence."""
    sents = sentences(text) or [text]
    chunks: list[str] = []
    current: list[str] = []
    for sent in sents:
        if current and sum(len(s) for s in current) + len(sent) > max_chars:
            chunks.append(" ".join(current))
            current = current[-overlap_sentences:] if overlap_sentences else []
        current.append(sent)
    if current:
        chunks.append(" ".join(current))
    return chunks
