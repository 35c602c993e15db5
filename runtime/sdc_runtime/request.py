"""The request API: what `Engine.submit` hands back, the row the scheduler thread keeps for it, and
the errors a request can meet before it runs (each a 4xx or 503 at the server)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sdc_runtime.detok import Detokenizer, StopMatcher
from sdc_runtime.outbox import Outbox
from sdc_runtime.sampling import SamplingParams


class BadPromptError(ValueError):
    """The request cannot be turned into a prompt; the message says why (a 400)."""


class PromptTooLongError(BadPromptError):
    """The prompt plus the requested tokens exceed the model's context."""


class QueueFullError(Exception):
    """Every row is busy and the waiting queue is full: come back later."""


@dataclass(eq=False)
class Row:
    prompt_ids: list[int]
    params: SamplingParams
    out: Outbox
    detok: Detokenizer
    stops: StopMatcher
    streamed: bool = True  # False: the text goes out once, at the end (no per-token hand-off)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: Any = None
    generated: int = 0
    position: int = 0  # position id of `next_input`: the real tokens before it
    next_input: int = 0
    finished: bool = False
    finished_at: int = 0  # the engine's step count when the row ended
    finish_reason: str = "length"
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    parts: list[str] = field(default_factory=list)  # text held back for a row that is not streamed

    def push(self, item: str | BaseException | None) -> None:
        self.out.put(item)

    def emit(self, text: str) -> None:
        if self.streamed:
            self.out.put(text)
        else:
            self.parts.append(text)


class Generation:
    """One submitted request: iterate `deltas()` for its text; usage is final once that ends."""

    def __init__(self, row: Row) -> None:
        self._row = row
        self.prompt_tokens = len(row.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return self._row.generated

    @property
    def finish_reason(self) -> str:
        return self._row.finish_reason

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache (final once the first delta arrived)."""
        return self._row.cached_tokens

    def cancel(self) -> None:
        """Free the row at the next step (the client went away)."""
        self._row.cancelled.set()

    async def deltas(self) -> AsyncIterator[str]:
        """The text as it comes (consecutive pieces that queued up meanwhile arrive joined)."""
        try:
            while True:
                text: list[str] = []
                end: BaseException | None = None
                done = False
                for item in await self._row.out.take():
                    if item is None:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        end = item
                        break
                    text.append(item)
                if text:
                    yield "".join(text)
                if end is not None:
                    raise end
                if done:
                    return
        finally:
            self._row.cancelled.set()  # a no-op once finished; frees the row if the reader stopped early
