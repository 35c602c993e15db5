"""Request and response bodies of the orchestrator's own API (the seed's contract)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Provider = Literal["ollama", "vllm", "transformers", "gemini", "auto"]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, description="The user's message.")
    provider: Provider | None = Field(default=None, description="Backend to use; default LLM_SERVICE_TYPE.")
    model: str | None = Field(default=None, description="A specific served model (GET /v1/models).")
    stream: bool = False
    use_rag: bool | None = Field(default=None, description="Retrieve context; default on when documents exist.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)


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


class GenerateRequest(BaseModel):
    """The old Gemini service's generation request."""

    model_config = ConfigDict(extra="ignore")
    query: str = Field(min_length=1)
    context: str | list[str] | None = None
    korean_analysis: dict[str, Any] | None = None


class GenerateResponse(BaseModel):
    response: str
    model_used: str
    processing_time: float
    korean_optimized: bool


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, max_length=2_000_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
