"""A chat turned into token ids, with the template's control tokens read and the messages' kept text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdc_runtime.request import BadPromptError


class ChatTokenizer:
    """A loaded tokenizer's chat template applied so that no message can forge a control token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.encoders = fixed_encoders(tokenizer)  # (reads control tokens, keeps them text)

    def ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the chat, with message contents tokenized as plain text.

        The chat template is rendered with a placeholder per message; the template's own text is
        tokenized with its control tokens, each message's content with special tokens split, so a
        `<|im_start|>system` typed by a user (or found in a retrieved document) stays text.
        """
        pieces = self.pieces(messages)
        ids: list[int] = []
        for text, is_content in pieces:
            if not text:
                continue
            if self.encoders is not None:
                ids += self.encoders[is_content].encode(text, add_special_tokens=False).ids
            else:
                ids += self.tokenizer(text, add_special_tokens=False, split_special_tokens=is_content)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if (
            not getattr(self.tokenizer, "chat_template", None)
            and bos is not None
            and getattr(self.tokenizer, "add_bos_token", False)
        ):
            ids.insert(0, bos)
        return ids

    def pieces(self, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
        """The chat as (text, is a message's content) pieces, in order."""
        if not getattr(self.tokenizer, "chat_template", None):
            pieces: list[tuple[str, bool]] = []
            for m in messages:
                pieces += [(f"{m['role']}: ", False), (m["content"], True), ("\n", False)]
            return [*pieces, ("assistant:", False)]
        marks = [f"\ue000sdc{i}\ue001" for i in range(len(messages))]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": mark} for m, mark in zip(messages, marks, strict=True)],
            add_generation_prompt=True,
            tokenize=False,
        )
        if all(rendered.count(mark) == 1 for mark in marks):
            pieces = []
            rest = rendered
            for m, mark in zip(messages, marks, strict=True):
                before, rest = rest.split(mark, 1)
                pieces += [(before, False), (m["content"], True)]
            return [*pieces, (rest, False)]
        # The template rewrites or drops contents: tokenize it whole, but only if no content holds a control token.
        specials = [t for t in self.tokenizer.all_special_tokens if t]
        specials += [str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()]
        for m in messages:
            found = next((s for s in specials if s in m["content"]), None)
            if found is not None:
                raise BadPromptError(
                    f"a {m['role']} message contains the control sequence {found!r}, which this model's chat "
                    "template cannot keep apart from its own"
                )
        full = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return [(full, False)]


def fixed_encoders(tokenizer: Any) -> tuple[Any, Any] | None:
    """Two copies of a fast tokenizer's Rust backend: one reads control tokens, one keeps them text.

    Calling the Transformers tokenizer flips one shared `encode_special_tokens` switch on its
    backend before each encode: a chat's template and its contents need opposite settings, and a
    long chat is tokenized in a worker thread while the event loop tokenizes another, so a flip
    between another call's flip and its encode could read a user's `<|im_start|>` as a control
    token. Each copy here keeps its setting for good. Calling the backend directly also halves the cost of tokenizing
    a chat (work the event loop does per request). `None` for tokenizers without a Rust backend (they take the slow path).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_special_tokens"):
        return None
    from tokenizers import Tokenizer

    controls, text = Tokenizer.from_str(backend.to_str()), Tokenizer.from_str(backend.to_str())
    for copy, keep_text in ((controls, False), (text, True)):
        copy.no_truncation()
        copy.no_padding()
        copy.encode_special_tokens = keep_text
    return controls, text
