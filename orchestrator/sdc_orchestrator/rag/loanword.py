"""Loanwords written in Hangul on one side and in Latin letters on the other, matched with no word list.

Why: `normalize.LEXICON` knows some seventy IT and office loanwords (쿠버네티스 = kubernetes); a
customer's documents name their own tools, products and things (프린터 / printer, 스토리지 / storage,
대시보드 / dashboard). Korean loanwords keep the English consonants in order and add or change
vowels, so the two spellings share a consonant skeleton: printer and 프린터 are both P-R-N-T, server
and 서버 S-P (a final or pre-consonant r is not pronounced, so not written), cloud and 클라우드 K-R-T.

`skeleton` maps either script to that skeleton: consonants in classes (k/g/c/q = ㄱ/ㄲ/ㅋ, t/d = ㄷ/ㄸ/ㅌ,
p/b/f/v = ㅂ/ㅃ/ㅍ, s = ㅅ/ㅆ, j/z/ch = ㅈ/ㅉ/ㅊ, l/r = ㄹ, m, n/ng, h), vowels dropped, repeats merged.
The retriever keeps the skeletons of the index's Latin words and of its Hangul nouns; a question word
in one script is related to the index words of the other script with its skeleton, if the skeleton has
at least `MIN_CONSONANTS` consonants, the Latin word pronounced (not an acronym) and the Hangul word of
three syllables or more: shorter skeletons are too common a pattern to mean anything (s-p is 서버 and
세부 alike), so 서버 / server is left to the lexicon.
"""

from __future__ import annotations

import functools
import re

from sdc_orchestrator.rag.korean import kiwi

MIN_CONSONANTS = 3

_INITIALS = "KKNTTRMPPSSxJJJKTPH"  # ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ (ㅇ: silent, x)
_FINALS = [
    "", "K", "K", "KS", "N", "NJ", "NH", "T", "R", "RK", "RM", "RP", "RS", "RT", "RP", "RH", "M", "P", "PS",
    "T", "T", "N", "J", "J", "K", "T", "P", "H",
]  # fmt: skip
_LATIN_RULES = [
    (re.compile(r"ph"), "P"),
    (re.compile(r"ck|q|k"), "K"),
    (re.compile(r"ch|tch"), "J"),
    (re.compile(r"sh"), "S"),
    (re.compile(r"th"), "T"),
    (re.compile(r"c(?=[eiy])"), "S"),
    (re.compile(r"c"), "K"),
    (re.compile(r"g(?=e$|er|es)"), "J"),  # soft g: storage = 스토리지, manager = 매니저
    (re.compile(r"x"), "KS"),
    (re.compile(r"[bpfv]"), "P"),
    (re.compile(r"[dt]"), "T"),
    (re.compile(r"[jz]"), "J"),
    (re.compile(r"g"), "K"),
    (re.compile(r"ng"), "N"),
    (re.compile(r"r(?![aeiouy])"), ""),  # non-rhotic: server = 서버, board = 보드
    (re.compile(r"[lr]"), "R"),
    (re.compile(r"[wyh]"), ""),
    (re.compile(r"[aeiou]"), ""),
    (re.compile(r"s"), "S"),
    (re.compile(r"m"), "M"),
    (re.compile(r"n"), "N"),
]
# A pronounced Latin word (4+ letters with a vowel: not an acronym like gpu, vpn) and a Hangul word of
# 3+ syllables: shorter ones share skeletons with too many native words (서버 and 세부 are both s-p).
_LATIN_WORD = re.compile(r"^(?=[a-z]*[aeiou])[a-z]{4,}$")
_HANGUL_WORD = re.compile(r"^[가-힣]{3,}$")


def _merge(skeleton: str) -> str:
    return re.sub(r"(.)\1+", r"\1", skeleton)


def latin_skeleton(word: str) -> str:
    text = word.lower()
    text = re.sub(r"ng", "N", text)
    for pattern, replacement in _LATIN_RULES:
        text = pattern.sub(replacement, text)
    return _merge(re.sub(r"[^A-Z]", "", text))


def hangul_skeleton(word: str) -> str:
    out = []
    for ch in word:
        code = ord(ch) - 0xAC00
        if not 0 <= code < 11172:
            return ""
        initial, final = code // 588, code % 28
        if _INITIALS[initial] != "x":
            out.append(_INITIALS[initial])
        out.append(_FINALS[final])
    return _merge("".join(out))


@functools.lru_cache(maxsize=100_000)
def _one_noun(word: str) -> bool:
    """Kiwi reads the word as a single noun (loanwords are nouns; 들어가 and joined compounds are not)."""
    tokens = kiwi().tokenize(word)
    return len(tokens) == 1 and str(tokens[0].tag) in ("NNG", "NNP")


def skeleton(word: str) -> tuple[str, str]:
    """("latin" | "hangul" | "", skeleton) of an index or question word."""
    if _LATIN_WORD.match(word):
        return "latin", latin_skeleton(word)
    if _HANGUL_WORD.match(word) and _one_noun(word):
        return "hangul", hangul_skeleton(word)
    return "", ""


class SkeletonIndex:
    """Skeleton -> the index words of each script that have it (grown at ingestion, linear)."""

    def __init__(self) -> None:
        self.words: dict[tuple[str, str], set[str]] = {}
        self._seen: set[str] = set()

    def add(self, words: list[str]) -> None:
        for word in words:
            if word in self._seen:
                continue
            self._seen.add(word)
            script, skel = skeleton(word)
            if script and len(skel) >= MIN_CONSONANTS:
                self.words.setdefault((script, skel), set()).add(word)

    def other_script(self, word: str) -> set[str]:
        """Index words of the other script that spell `word` the same way (may include removed words)."""
        script, skel = skeleton(word)
        if not script:
            return set()
        if len(skel) < MIN_CONSONANTS:
            return set()
        return set(self.words.get(("hangul" if script == "latin" else "latin", skel), ()))
