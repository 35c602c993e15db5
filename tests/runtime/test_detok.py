"""Incremental detokenization and stop-string matching, against the tiny model's real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sdc_runtime.detok import Detokenizer, StopMatcher

pytestmark = pytest.mark.runtime

TEXTS = [
    "서울은 대한민국의 수도입니다. 부산은 항구 도시입니다.",
    "Hello, how can I help you today?",
    "쿠버네티스 GPU 🚀 emoji and 漢字 mixed",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


class SlowOnly:
    """The tokenizer without its Rust backend: the offset-window fallback."""

    def __init__(self, tokenizer: Any) -> None:
        self.decode = tokenizer.decode


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("backend", ["DecodeStream", "offset window"])
def test_streamed_text_equals_one_shot_decode(tokenizer: Any, text: str, backend: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tokenizer if backend == "DecodeStream" else SlowOnly(tokenizer))
    pieces = [detok.step(i) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in p for p in pieces), "never half a UTF-8 character"


def test_special_tokens_are_not_streamed(tokenizer: Any) -> None:
    detok = Detokenizer(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), *tokenizer("hi", add_special_tokens=False)["input_ids"]]
    assert "".join(detok.step(i) for i in ids) == "hi"


STOPS = [
    # name, stop strings, deltas fed, expected emitted text, stopped
    ("no stops pass everything", (), ["ab", "cd"], "abcd", False),
    ("a stop inside one delta", ("cd",), ["abcdef"], "ab", True),
    ("a stop across deltas", ("cd",), ["abc", "def"], "ab", True),
    ("the earliest of several stops", ("ef", "bc"), ["abcdef"], "a", True),
    ("a prefix that is not a stop is released", ("xyz",), ["abxy", "q"], "abxyq", False),
    ("a stop at the very start", ("ab",), ["abc"], "", True),
]


@pytest.mark.parametrize(("name", "stops", "deltas", "expected", "stopped"), STOPS, ids=[s[0] for s in STOPS])
def test_stop_matcher(name: str, stops: tuple[str, ...], deltas: list[str], expected: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    out, hit = "", False
    for delta in deltas:
        text, hit = matcher.feed(delta)
        out += text
        if hit:
            break
    if not hit:
        out += matcher.flush()
    assert (out, hit) == (expected, stopped)


def test_stop_matcher_holds_back_only_what_could_start_a_stop() -> None:
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("hello ST") == ("hello", False)  # " ST" might become STOP
    assert matcher.feed("ART") == (" ST", False)
    assert matcher.flush() == "ART"
