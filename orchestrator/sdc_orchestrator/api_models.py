"""Request and response bodies of the orchestrator's own API (the seed's contract)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from sdc_orchestrator.limits import InputError, check_tree

Provider = Literal["ollama", "vllm", "transformers", "gemini", "auto"]


class CheckedBody(BaseModel):
    """A request body walked once before any field is validated (limits.check_tree): no 300-digit
    integers, NaN, lone surrogates or deep nesting reach pydantic's conversions or an error message."""

    @model_validator(mode="before")
    @classmethod
    def _tree(cls, data: Any) -> Any:
        try:
            check_tree(data)
        except InputError as err:
            raise ValueError(str(err)) from None
        return data


class ChatRequest(CheckedBody):
    # Unknown fields are ignored, as the seed's API ignored them (callers written for it send some), and
    # counted (sdc_orchestrator_ignored_fields_total): "allow" only keeps them in `model_extra` to count.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    message: str = Field(min_length=1, description="The user's message.")
    provider: Provider | None = Field(default=None, description="Backend to use; default LLM_SERVICE_TYPE.")
    model: str | None = Field(default=None, max_length=256, description="A specific served model (GET /v1/models).")
    stream: StrictBool = False
    use_rag: StrictBool | None = Field(default=None, description="Retrieve context; default on when documents exist.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Default LLM_TEMPERATURE (0.3).")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Default LLM_TOP_P (0.8).")
    max_tokens: int | None = Field(default=None, ge=1, le=32768, description="Default LLM_MAX_TOKENS (2048).")
    user: str | None = Field(
        default=None, max_length=256, description="Keeps this user on one model (like the X-SDC-User header)."
    )


def count_ignored(route: str, body: BaseModel) -> None:
    """Count the unknown fields of a seed-route body (the fields' names are the caller's: never a label)."""
    from sdc_orchestrator import metrics

    if body.model_extra:
        metrics.IGNORED_FIELDS.labels(route).inc(len(body.model_extra))


class Source(BaseModel):
    id: str
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    matched: list[str] = Field(default_factory=list, description="Question terms found in the passage (normalized).")
    related: list[str] = Field(
        default_factory=list, description="Question~passage morphemes matched by meaning (Kiwi CoNg)."
    )
    deciding: list[str] = Field(
        default_factory=list, description="Matched terms that near-duplicate passages lack (a year, a site...)."
    )


class ChatResponse(BaseModel):
    response: str
    model: str
    provider: str
    processing_time: float = Field(description="Seconds from request to answer.")
    sources: list[Source] = Field(default_factory=list)
    fallback_used: bool = False
    response_id: str = Field(default="", description="Rate this answer with POST /api/v1/feedback.")


class GenerateRequest(CheckedBody):
    """The old Gemini service's generation request."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # ignored and counted, like ChatRequest's
    query: str = Field(min_length=1)
    context: str | list[str] | None = Field(default=None, description="Text the answer is based on.")
    korean_analysis: dict[str, Any] | None = Field(default=None, description="`keywords`: a list of strings.")
    provider: Provider | None = Field(default=None, description="Backend to use; default LLM_SERVICE_TYPE.")


class GenerateResponse(BaseModel):
    response: str
    model_used: str
    processing_time: float
    korean_optimized: bool


class DocumentIn(CheckedBody):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, max_length=2_000_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class FeedbackIn(CheckedBody):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=64, description="From the chat answer.")
    rating: Literal[1, -1] = Field(description="1: good answer, -1: bad answer.")
    comment: str | None = Field(default=None, max_length=2000)
