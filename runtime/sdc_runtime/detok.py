"""Per-row text assembly: incremental detokenization and stop strings.

Re-decoding a whole sequence for every streamed token costs O(n) per token
and O(n²) per answer. `tokenizers`' `DecodeStream` keeps the few tokens a
byte-level or byte-fallback tokenizer needs to finish a UTF-8 character and
returns only the new text, so each step costs O(1). Tokenizers without a Rust
backend get the same contract from the prefix/read-offset window that TGI and
vLLM use (decode a short window twice, keep the difference).

Stop strings are matched on text, not tokens (a stop string may span tokens,
and a token may hold the end of one plus more): the matcher holds back the
last `len(longest stop) - 1` characters, so what it releases can never turn
out to be the start of a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Detokenizer:
    """Text for each new token id; a token that ends mid-character yields ''."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream: Any = None
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def step(self, token: int) -> str:
        if self._stream is not None:
            return self._stream.step(self._backend, token) or ""
        self._ids.append(token)
        before = self._tokenizer.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = self._tokenizer.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return str(after[len(before) :])
        return ""


class StopMatcher:
    """Releases text as it comes, except a tail that could still begin a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self._held = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string ended the output)."""
        if not self.stops:
            return delta, False
        text = self._held + delta
        cut = min((i for s in self.stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return text[:cut], True
        keep = max(0, len(text) - self.hold)
        self._held = text[keep:]
        return text[:keep], False

    def flush(self) -> str:
        """The held tail, once the output ended for another reason."""
        held, self._held = self._held, ""
        return held
