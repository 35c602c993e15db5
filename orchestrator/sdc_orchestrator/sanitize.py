"""Chat-template control sequences in untrusted text, made harmless before any backend sees them.

A backend turns the messages into one prompt with its chat template; if user
text or a retrieved document carries the template's own markers
(`<|im_start|>system`, `<start_of_turn>`, `<|eot_id|>`, `[INST]`, ...), a
backend that parses special tokens in content (sdc-runtime did; Ollama's raw
templates do) gives the writer a real system turn. The orchestrator cannot know
which template a backend uses, so it breaks the markers of every common family
in every message and passage: the brackets of a marker are swapped for look-alike
characters (`<` → `‹`, `>` → `›`, `[` → `［`, `]` → `］`). The text stays readable
(for the model too), but no tokenizer maps it to a control token any more.

Markers are matched case-insensitively and generically (`<|anything|>`,
`[|anything|]`), so a template family we did not list is caught as long as it
uses those shapes.
"""

from __future__ import annotations

import re

# Shapes first (ChatML, Llama 3, Phi, <|endoftext|>; EXAONE), then the named markers
# that use plain angle or square brackets (Gemma, Llama 2 / Mistral, sentencepiece).
CONTROL = re.compile(
    r"<\|[^<>|\n]{0,48}\|>"  # <|im_start|> <|eot_id|> <|start_header_id|> <|endoftext|> <|user|>
    r"|\[\|[^\[\]|\n]{0,48}\|\]"  # [|system|] [|endofturn|] [|assistant|]
    r"|</?\s*(?:start_of_turn|end_of_turn|start_of_image|end_of_image|bos|eos|pad|unk|s|im_start|im_end)\s*>"
    r"|\[\s*/?\s*(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\s*\]"  # Mistral
    r"|<<\s*/?\s*SYS\s*>>",  # Llama 2
    re.IGNORECASE,
)
_SWAP = str.maketrans({"<": "‹", ">": "›", "[": "［", "]": "］"})


def neutralize(text: str) -> str:
    """`text` with every control marker's brackets swapped; other text untouched.

    Swapping is one character for one, and the look-alikes are not ASCII, so a
    pass cannot build a new marker out of old ones; the loop is a guard anyway.
    """
    for _ in range(4):
        fixed = CONTROL.sub(lambda m: m.group(0).translate(_SWAP), text)
        if fixed == text:
            return fixed
        text = fixed
    return text


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None
