"""The slice of the OpenAI wire protocol the runtime serves, as pydantic models.

Unknown fields are ignored (OpenAI clients send many we do not use); values
we cannot honour are refused with a 400 that names the field. Every number
has a range, so nothing hostile (NaN, 1e30 seeds, a million stop strings)
reaches the sampler: the limits follow OpenAI's (at most 4 stop sequences,
temperature 0..2, top_p in (0, 1], n = 1 here). Every string is checked as
valid Unicode: a JSON `\\ud800` escape decodes to a lone surrogate that the
tokenizer (and any error message echoing it) cannot encode, so it is a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_STOP_CHARS = 256
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode (a lone surrogate at character {err.start})") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[TextPart] = Field(description="Text, or OpenAI content parts of type text.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


StopString = Annotated[Text, Field(max_length=MAX_STOP_CHARS)]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: Text = Field(max_length=512)
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=2**31)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31)
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    ignore_eos: bool = Field(default=False, description="vLLM extension: generate max_tokens whatever the model says.")
    n: int = Field(default=1, ge=1, le=1)

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Text = Field(max_length=512)
    input: Annotated[Text, Field(min_length=1)] | Annotated[list[Text], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
