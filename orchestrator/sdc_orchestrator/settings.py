"""Orchestrator settings: the seed's environment variables keep their meaning.

A team leaving the seed's services sets the same variables (LLM_SERVICE_TYPE,
OLLAMA_HOST, VLLM_PORT, GEMINI_API_KEY, ...) and gets the same single backend,
with no cluster at all. The operator's published endpoints (SDC_ENDPOINTS_FILE)
add more, live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GEMINI_OPENAI_URL = "https://generativelanguage.googleapis.com/v1beta/openai"


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # `none`: no seed endpoint; a request without a provider goes to the published endpoints by
    # weight, then to the fallbacks (Gemini when keyed). The chart's default. `auto`: the same
    # split, with GEMINI_WEIGHT's share for Gemini and the seed's services where configured.
    llm_service_type: Literal["ollama", "vllm", "transformers", "gemini", "none", "auto"] = "ollama"
    llm_model_name: str | None = Field(
        default=None,
        description="Model of the seed's endpoint; unset: the backend's /v1/models, else the guide's gemma-2-9b-it.",
    )
    ollama_host: str = "localhost"
    ollama_port: int = 11434
    ollama_num_ctx: int = Field(
        default=8192, ge=256, description="Context for the seed's Ollama when its model sets none (the guide's)."
    )
    vllm_host: str = "localhost"
    vllm_port: int = 8000
    transformers_host: str = "localhost"
    transformers_port: int = 8000
    gemini_api_key: SecretStr | None = None
    gemini_api_key_file: Path | None = Field(
        default=None,
        description="A file holding the Gemini key (a mounted Secret): read at start when GEMINI_API_KEY is unset. "
        "A file, unlike an environment variable, is not inherited by child processes nor shown by `env`.",
    )
    gemini_base_url: str = GEMINI_OPENAI_URL
    gemini_model_name: str = "gemini-2.0-flash"
    gemini_weight: int = Field(default=0, ge=0, description="Share of `auto` traffic sent to Gemini.")
    llm_fallback: str | None = Field(default=None, description="Providers tried in order; 'none' disables.")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("gemini_api_key") and data.get("gemini_api_key_file"):
            key = Path(data["gemini_api_key_file"]).read_text().strip()
            data = {**data, "gemini_api_key": key or None}
        return data

    sdc_endpoints_file: Path | None = None
    sdc_endpoints_configmap: str | None = Field(
        default=None,
        description="The operator's endpoints ConfigMap in SDC_NAMESPACE: followed through the API (a watch, "
        "about a second behind) when the pod has a ServiceAccount token; SDC_ENDPOINTS_FILE serves otherwise.",
    )
    sdc_namespace: str | None = Field(default=None, description="The release's namespace (the chart sets it).")
    sdc_route_namespaces: str = Field(
        default="",
        description="Comma-separated namespaces whose LocalLLMs this release serves; empty = SDC_NAMESPACE "
        "(any namespace when that is unset too); '*' = every namespace.",
    )
    sdc_route_pool: str = Field(default="", description="Serve only LocalLLMs with this spec.routing.pool.")
    sdc_data_dir: Path = Path("data")
    sdc_embedding_base_url: str | None = None
    sdc_embedding_model: str | None = None
    sdc_attempt_timeout_s: float = 60.0
    sdc_total_timeout_s: float = 120.0
    sdc_connect_timeout_s: float = 3.0
    sdc_max_attempts: int = 3
    sdc_cooldown_s: float = 10.0
    sdc_max_message_chars: int = 16000
    sdc_rag_top_k: int = 4
    sdc_rag_rewrite: bool = Field(
        default=False,
        description="Weak questions (a paraphrase that shares few words with every passage) are rewritten by the "
        "chat's model into the documents' terms and searched again (rag/rewrite.py): one more model call each.",
    )
    sdc_rag_rewrite_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="The rewrite's limit; past it the question is searched as asked."
    )

    # The gateway (second-wave contract): keys, per-key limits, input limits.
    sdc_api_keys_file: Path | None = Field(
        default=None, description="Lines NAME:KEY or NAME:sha256:HEX; unset = no keys (local development only)."
    )
    sdc_admin_key_names: str = Field(
        default="", description="Comma-separated key names allowed to upload and delete documents; empty = every key."
    )
    sdc_rate_limit_rpm: int = Field(default=0, ge=0, description="Requests per minute per key (0 = unlimited).")
    sdc_max_concurrent_per_key: int = Field(default=0, ge=0, description="In-flight requests per key (0 = unlimited).")
    sdc_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    sdc_max_tokens: int = Field(default=4096, ge=1, description="Largest max_tokens any route accepts.")
    sdc_max_n: int = Field(default=4, ge=1, description="Largest `n` (choices per request).")
    sdc_max_messages: int = Field(default=256, ge=1, description="Messages per OpenAI chat request.")
    sdc_max_prompt_chars: int = Field(default=64000, ge=1, description="Characters of all messages together.")
    sdc_max_documents_per_request: int = Field(default=64, ge=1)
    sdc_max_document_chars: int = Field(default=2_000_000, ge=1)
    sdc_max_metadata_bytes: int = Field(default=16 * 1024, ge=2, description="JSON size of one document's metadata.")
    sdc_max_concurrent_ingests: int = Field(
        default=1, ge=1, description="Documents indexed at once; Kiwi is CPU-bound, more only queue."
    )
    sdc_worker_threads: int = Field(default=4, ge=2, description="Threads for indexing, retrieval and file I/O.")
    sdc_ingest_timeout_s: float = Field(default=300.0, gt=0, description="Longest one upload may index.")
    sdc_model_discovery_retry_s: float = Field(
        default=30.0, ge=0, description="A backend whose /v1/models failed is not asked again for this long."
    )

    # Scale from zero (scaling/): a request for a model published at zero is held while one replica starts.
    sdc_scale_api_url: str | None = Field(
        default=None,
        description="Kubernetes API the orchestrator writes localllms/scale to (the chart sets "
        "https://kubernetes.default.svc with orchestrator.scaleFromZero); unset: a model at zero answers 503.",
    )
    sdc_scale_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    sdc_scale_ca_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    sdc_hold_max_per_model: int = Field(
        default=64, ge=0, description="Requests held at once per model scaling from zero; the next get 429."
    )
    sdc_hold_max_wait_s: float = Field(
        default=300.0, gt=0, description="Longest a request waits for a replica from zero; then 503 + Retry-After."
    )
    sdc_scale_down_interval_s: float = Field(
        default=5.0, gt=0, description="How often idle models with spec.autoscaling are checked for a step down."
    )
    sdc_hold_keepalive_s: float = Field(
        default=10.0, gt=0, description="Seconds between SSE comments on a held stream."
    )

    def route_namespaces(self) -> frozenset[str] | None:
        """The namespaces served; None means any."""
        names = frozenset(n.strip() for n in self.sdc_route_namespaces.split(",") if n.strip())
        if "*" in names:
            return None
        if names:
            return names | ({self.sdc_namespace} if self.sdc_namespace else set())
        return frozenset({self.sdc_namespace}) if self.sdc_namespace else None

    def admin_names(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.sdc_admin_key_names.split(",") if n.strip())

    # The migration guide's sampling, sent when a request omits it (sampling.py).
    llm_temperature: float = Field(default=0.3, ge=0, le=2)
    llm_top_p: float = Field(default=0.8, gt=0, le=1)
    llm_max_tokens: int = Field(default=2048, ge=1)
    # Migration tools: feedback (feedback.py) and shadow traffic (shadow.py).
    sdc_feedback_max_responses: int = Field(default=10000, ge=1, description="Answers remembered for feedback.")
    sdc_feedback_file: Path | None = Field(
        default=None, description="Feedback log (JSON lines); default: SDC_DATA_DIR/feedback.jsonl, beside documents/."
    )
    sdc_shadow_provider: str | None = Field(default=None, description="Also send every chat to this provider.")
    sdc_shadow_concurrency: int = Field(default=4, ge=1, description="Shadow calls in flight; more are dropped.")
    sdc_shadow_timeout_s: float = Field(default=60.0, gt=0)
    sdc_shadow_max_pairs: int = Field(default=1000, ge=1, description="Recent pairs kept for the report.")
    sdc_shadow_keep_texts: int = Field(
        default=0, ge=0, le=10000, description="Keep the question and both answers of the last N pairs (0: none)."
    )
    sdc_shadow_text_chars: int = Field(default=2000, ge=1, le=100_000, description="Characters kept of each text.")

    def local_service_configured(self, service: str) -> bool:
        """`auto` includes a seed local service only when its host or port was set explicitly."""
        return bool({f"{service}_host", f"{service}_port"} & self.model_fields_set)

    def fallback_order(self) -> list[str]:
        if self.llm_fallback is None:
            return ["gemini"] if self.gemini_api_key else []
        if self.llm_fallback.strip().lower() in ("", "none"):
            return []
        return [p.strip() for p in self.llm_fallback.split(",") if p.strip()]
