"""Kiwi, the Korean morphological analyser, behind a few small functions.

Why morphemes: Korean attaches particles and endings to words (서울은, 서울의,
서울에서), so whitespace tokens rarely match between a question and a passage.
Kiwi splits them into stems and keeps the content-bearing parts (nouns, verb
and adjective stems, roots, foreign words, numbers). One Kiwi instance, with
its CoNg model (the default since kiwipiepy 0.22, shipped in `kiwipiepy-model`),
is loaded once (a second or two) and shared: it is thread-safe for analysis,
and `semantic.py` uses the same instance for morpheme similarity.

`analyze` is what the retriever indexes and searches with: the text is first
normalized (`normalize.py`: loanwords, numbers, units, dates), then number +
counter pairs are merged into one token (3개월, 25mb, t14), and each pair of
adjacent nouns is also emitted joined, so 연차 휴가, 연차휴가 and 연차휴가를 all
share the token 연차휴가 whatever the spacing (spacing-insensitive compounds).

Chunking is linear in the text: Kiwi's sentence splitter costs more than
linearly on one long input (issue #13 measured about n^1.7), so the text is
cut into bounded blocks and sentences by regular expressions (linear), and
Kiwi only ever sees one passage at a time, in `analyze`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdc_orchestrator.rag.normalize import Normalizer, load_synonyms

CONTENT_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "SL", "SH", "SN", "MAG")
# What `analyze` keeps: content words; bare bound nouns (것, 수, 때) and pronouns carry no topic.
INDEX_TAGS = ("NNG", "NNP", "NR", "VV", "VA", "XR", "SL", "SH", "SN", "MAG")
NOUN_TAGS = ("NNG", "NNP")
# Tags whose Kiwi morpheme id is a real entry of the CoNg model (SL/SN share one generic id).
SIMILARITY_TAGS = ("NNG", "NNP", "VV", "VA", "XR")
# Light verbs and question words: in every question, in no answer.
STOP = frozenset(
    {
        "하",
        "되",
        "있",
        "않",
        "없",
        "얼마",
        "어떻",
        "어떡",
        "며칠",
        "무엇",
        "뭐",
        "언제",
        "어디",
        "누구",
        "몇",
        "얼마나",
        "어떻게",
        "왜",
    }
)
# Units that merge with a number right before them (3개월, 25mb, 10%).
UNIT_TAGS = ("NNB", "NNG", "SL", "SW", "SN")
BLOCK_CHARS = 2000


@functools.cache
def kiwi() -> Any:
    from kiwipiepy import Kiwi

    return Kiwi()


ENGLISH = Path(__file__).with_name("english.txt")


@functools.cache
def normalizer(english: bool = True) -> Normalizer:
    """The shared normalizer: the loanword lexicon, the English glossary (`english.txt`: passport -> 여권;
    `english=False` for the ablation only) and `SDC_RAG_SYNONYMS_FILE`, a deployment's own spellings."""
    extra: dict[str, tuple[str, ...]] = dict(load_synonyms(ENGLISH)) if english else {}
    path = os.environ.get("SDC_RAG_SYNONYMS_FILE")
    for canonical, variants in (load_synonyms(Path(path)) if path else {}).items():
        extra[canonical] = (*extra.get(canonical, ()), *variants)
    return Normalizer(extra)


def normalized(text: str, english: bool = True, details: bool = True) -> str:
    """`text` through the shared normalizer. Ingestion calls it once per passage, in `prepare`, and keeps
    the result on the Passage: the lexicon's regex is most of ingestion's CPU, and a second pass at indexing
    kept the GIL busy enough to stall health checks for seconds during a large upload
    (tests/orchestrator/test_ingest.py)."""
    return normalizer(english)(text, details)


def analyzer_version() -> str:
    """Changes whenever stored tokens would differ: then the retriever re-analyses on load."""
    from kiwipiepy import __version__ as kiwi_version

    # v4: passages carry their normalized text and details (issue #28).
    return f"v4/kiwi-{kiwi_version}/lex-{normalizer().lexicon.fingerprint}"


def morphemes(text: str) -> list[str]:
    """Content morphemes of `text`, lower-cased, no normalization: the plain Kiwi-BM25 baseline."""
    return [tok.form.lower() for tok in kiwi().tokenize(text) if tok.tag.startswith(CONTENT_TAGS)]


def whitespace_tokens(text: str) -> list[str]:
    """The naive baseline the retrieval test compares against."""
    return [t for t in re.split(r"[\s.,!?;:()\"'\[\]]+", text.lower()) if t]


@dataclass(frozen=True)
class Term:
    """One index/query term: its text, and the Kiwi morpheme id when CoNg knows the morpheme."""

    text: str
    morph_id: int | None = None
    tag: str = ""
    joined: bool = False


def analyze(
    text: str, normalize: bool = True, join: bool = True, details: bool = True, english: bool = True
) -> list[Term]:
    """Normalized content terms of `text`: merged number+unit tokens, plus joined adjacent nouns.

    `normalize`, `join`, `details` (normalize.normalize_details) and `english` (the glossary) exist for the
    evaluation's ablation; the service always uses all four.
    """
    return analyze_normalized(normalized(text, english, details) if normalize else text, join)


def analyze_normalized(text: str, join: bool = True) -> list[Term]:
    """`analyze` of a text already normalized (or deliberately not): what `prepare` calls with the
    normalized text it keeps, so a passage goes through the normalizer once."""
    toks = kiwi().tokenize(text)
    terms: list[Term] = []
    prev_noun: tuple[str, int] | None = None  # (form, end offset) of the previous noun, for joining
    i = 0
    while i < len(toks):
        tok = toks[i]
        tag = tok.tag
        if tag in ("SN", "SL"):
            # Merge a run of glued number/Latin/unit pieces: 3+개월, t+14, 25+mb, 10+%, 2024+년.
            form, end, j = tok.form, tok.start + tok.len, i + 1
            while j < len(toks) and toks[j].start == end and toks[j].tag.startswith(UNIT_TAGS):
                if toks[j].tag in ("NNG", "NNB") and (toks[j - 1].tag != "SN" or toks[j].len > 3):
                    break
                form, end = form + toks[j].form, end + toks[j].len
                j += 1
            form = form.lower()
            terms.append(Term(form, None, tag))
            prev_noun = None
            i = j
            continue
        i += 1
        if not tag.startswith(INDEX_TAGS) or tok.form in STOP:
            prev_noun = None
            continue
        form = tok.form.lower()
        terms.append(Term(form, tok.id if tag.startswith(SIMILARITY_TAGS) else None, tag))
        if tag.startswith(NOUN_TAGS):
            if join and prev_noun is not None and tok.start - prev_noun[1] <= 1:
                terms.append(Term(prev_noun[0] + form, None, "NNG", joined=True))
            prev_noun = (form, tok.start + tok.len)
        else:
            prev_noun = None
    return terms


def terms_text(text: str) -> list[str]:
    return [t.text for t in analyze(text)]


_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n+")


def sentences(text: str) -> list[str]:
    """Sentences at final punctuation or line breaks (a regular expression: linear, and ~2x cheaper
    than Kiwi's model-based splitter, which tokenizes the text a second time before `analyze` does)."""
    return [s.strip() for blk in blocks(text) for s in _SENTENCE_END.split(blk) if s.strip()]


_BREAK = re.compile(r"\n\s*\n|(?<=[.!?。])\s+|(?<=다\.)|\n")


def blocks(text: str, max_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """Cut `text` into pieces of at most `max_chars` at paragraph, sentence or line breaks (linear).

    A piece with no break at all (one enormous line) is cut at the last space before the limit,
    or hard at the limit, so every Kiwi call downstream gets bounded input.
    """
    start, n = 0, len(text)
    while start < n:
        if n - start <= max_chars:
            piece = text[start:]
            if piece.strip():
                yield piece
            return
        window = text[start : start + max_chars]
        cut = -1
        for match in _BREAK.finditer(window, max_chars // 4):
            cut = match.end()
        if cut <= 0:
            space = window.rfind(" ", max_chars // 4)
            cut = space + 1 if space > 0 else max_chars
        piece = text[start : start + cut]
        if piece.strip():
            yield piece
        start += cut


def iter_chunks(text: str, max_chars: int = 400, overlap_sentences: int = 1) -> Iterator[str]:
    """`chunk`, one passage at a time: a caller may stop (or yield to cancellation) between passages."""
    current: list[str] = []
    size = 0
    produced = False
    for blk in blocks(text):
        for sent in (s.strip() for s in _SENTENCE_END.split(blk)):
            if not sent:
                continue
            if current and size + len(sent) > max_chars:
                yield " ".join(current)
                produced = True
                current = current[-overlap_sentences:] if overlap_sentences else []
                size = sum(len(s) for s in current)
            current.append(sent)
            size += len(sent)
    if current:
        yield " ".join(current)
    elif not produced and text.strip():
        yield text.strip()


def chunk(text: str, max_chars: int = 400, overlap_sentences: int = 1) -> list[str]:
    """Group whole sentences into passages of at most ~max_chars, overlapping by a sentence."""
    return list(iter_chunks(text, max_chars, overlap_sentences))
