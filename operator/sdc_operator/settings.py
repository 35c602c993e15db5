"""Operator settings, read from the environment (prefix SDC_) with pydantic-settings.

Everything a builder needs beyond the spec arrives through this object, so the
builders stay pure and tests pass settings explicitly instead of patching env.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDC_", frozen=True, extra="ignore")

    vllm_image: str = Field(default="vllm/vllm-openai:v0.11.0", description="Default vLLM image.")
    ollama_image: str = Field(default="ollama/ollama:0.12.6", description="Default Ollama image.")
    runtime_image: str = Field(default="ghcr.io/sdc-llm/sdc-runtime:0.1.0", description="sdc-runtime image.")
    fetcher_image: str = Field(
        default="ghcr.io/sdc-llm/sdc-runtime:0.1.0", description="Image that runs sdc-fetch-model."
    )
    gpu_resource_name: str = Field(default="nvidia.com/gpu")
    gpu_toleration_key: str = Field(default="nvidia.com/gpu", description="Taint key carried by GPU nodes.")
    allowed_sources: list[str] = Field(
        default_factory=lambda: ["*/*"],
        description="fnmatch patterns of Hugging Face repositories (and Ollama tags) that may be downloaded.",
    )
    allowed_ollama_models: list[str] = Field(
        default_factory=lambda: ["*"], description="fnmatch patterns of Ollama tags that may be pulled."
    )
    hf_endpoint: str | None = Field(default=None, description="A Hugging Face mirror for the download step.")
    cluster_domain: str = Field(default="cluster.local")
    watch_namespaces: list[str] = Field(default_factory=list, description="Empty: watch the whole cluster.")
    endpoints_configmap: str = Field(default="sdc-endpoints", description="ConfigMap the ready endpoints go to.")
    endpoints_namespace: str = Field(default="sdc", description="Namespace of that ConfigMap.")
    status_debounce_s: float = Field(
        default=0.5, ge=0, description="Status and endpoint writes are coalesced over this window."
    )
    metrics_port: int = Field(default=8080)
    health_port: int = Field(default=8081)
    peering_name: str = Field(default="sdc-operator")
    peering_priority: int | None = Field(
        default=None, description="This replica's priority among peers (default: random, so replicas never tie)."
    )
    peering_lifetime_s: int = Field(
        default=30, ge=5, description="A silent peer counts as gone after this long: the standby's takeover time."
    )
    standalone: bool = Field(default=False, description="Skip peering (a single replica).")
    log_format: str = Field(default="json")
    ollama_context_length: int = Field(
        default=8192, ge=256, description="Ollama's num_ctx when engine.maxModelLen is unset (the guide's 8192)."
    )
    gpu_memory_gib: dict[str, float] = Field(
        default_factory=dict,
        description="GPU memory (GiB) by nvidia.com/gpu.product, added to or overriding fit.GPU_MEMORY_GIB "
        '(JSON, e.g. {"NVIDIA-L4": 22}).',
    )
