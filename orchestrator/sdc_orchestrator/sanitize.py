"""Chat-template control sequences in untrusted text, made harmless before any backend sees them.

A backend turns the messages into one prompt with its chat template; if user
text or a retrieved document carries the template's own markers
(`<|im_start|>system`, `<start_of_turn>`, `<|eot_id|>`, `[INST]`, ...), a
backend that parses special tokens in content (sdc-runtime did; Ollama's raw
templates do) gives the writer a real system turn. The orchestrator cannot know
which template a backend uses, so it breaks the markers of every common family
in every message and passage: the brackets of a marker are swapped for look-alike
characters (`<` → `‹`, `>` → `›`, `[` → `⟦`, `]` → `⟧`: look-alikes that NFKC does not fold back). The text stays readable
(for the model too), but no tokenizer maps it to a control token any more.

Markers are matched case-insensitively and generically (`<|anything|>`,
`[|anything|]`), so a template family we did not list is caught as long as it
uses those shapes. They are matched on the text's NFKC form (width and
compatibility folded), character by character, so DeepSeek's full-width
`<｜User｜>`, a full-width `＜|im_start|＞`, small-form `﹤`/`﹥` and full-width
letters are caught as well as a tokenizer that normalizes them would see them;
the characters swapped are the original ones.

`neutralize_json` applies the same to every string and key of a JSON value
(tools, tool calls), and `sse_safe` escapes the characters line readers split
on (U+2028, U+2029, U+0085) that JSON leaves raw.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Shapes first (ChatML, Llama 3, Phi, <|endoftext|>; EXAONE), then the named markers
# that use plain angle or square brackets (Gemma, Llama 2 / Mistral, sentencepiece).
CONTROL = re.compile(
    r"<\|[^<>|\n]{0,48}\|>"  # <|im_start|> <|eot_id|> <|start_header_id|> <|endoftext|> <|user|>
    r"|\[\|[^\[\]|\n]{0,48}\|\]"  # [|system|] [|endofturn|] [|assistant|]
    r"|</?\s*(?:start_of_turn|end_of_turn|start_of_image|end_of_image|bos|eos|pad|unk|s|im_start|im_end|tool_call|tool_response)\s*>"
    r"|\[\s*/?\s*(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\s*\]"  # Mistral
    r"|<<\s*/?\s*SYS\s*>>",  # Llama 2
    re.IGNORECASE,
)
_SWAP = str.maketrans({"<": "‹", ">": "›", "[": "⟦", "]": "⟧"})


def _folded(text: str) -> tuple[str, list[int]]:
    """The NFKC form of `text`, character by character, and for each folded character its index in `text`."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        folded = ch if ch.isascii() else unicodedata.normalize("NFKC", ch)
        chars.append(folded)
        where.extend([i] * len(folded))
    return "".join(chars), where


def _swap_once(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return CONTROL.sub(lambda m: m.group(0).translate(_SWAP), text)
    folded, where = _folded(text)
    hit: set[int] = set()
    for m in CONTROL.finditer(folded):
        hit.update(where[k] for k in range(m.start(), m.end()) if folded[k] in "<>[]")
    if not hit:
        return text
    # The original character (say `＜`) becomes its folded form's look-alike (`‹`).
    return "".join(unicodedata.normalize("NFKC", c).translate(_SWAP) if i in hit else c for i, c in enumerate(text))


def neutralize(text: str) -> str:
    """`text` with every control marker's brackets swapped; other text untouched.

    Swapping is one character for one (a full-width bracket becomes one look-alike), and the
    look-alikes fold to nothing a marker is made of, so a pass cannot build a new marker out of
    old ones; the loop is a guard anyway.
    """
    for _ in range(4):
        fixed = _swap_once(text)
        if fixed == text:
            return fixed
        text = fixed
    return text


def neutralize_json(value: Any) -> Any:
    """A copy of a JSON value with every string and key neutralized (tools, tool calls, names)."""
    if isinstance(value, str):
        return neutralize(value)
    if isinstance(value, list):
        return [neutralize_json(v) for v in value]
    if isinstance(value, dict):
        return {neutralize(str(k)): neutralize_json(v) for k, v in value.items()}
    return value


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None or CONTROL.search(_folded(text)[0]) is not None


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def sse_safe(line: str) -> str:
    """A JSON event line with the separators that line readers split on (and JSON leaves raw) escaped.

    Inside JSON strings the escape means the same character; a reader splitting on U+2028 (Python's
    str.splitlines, JavaScript line readers) no longer cuts the event in two.
    """
    return line.translate(_LINE_BREAKS)
