"""Typed models of the LocalLLM resource: the single source of the CRD schema.

`crd.py` turns these models into the OpenAPI schema of `crds/localllm.yaml`,
so a field, its description, default and enum exist in exactly one place. Field
names are camelCase on the wire (the Kubernetes convention) and snake_case in
Python. Rules that span fields are CEL (`x-kubernetes-validations`), enforced by
the API server before the operator ever sees the object; `semantic_errors` holds
the few checks CEL cannot express.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$"
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$"
OLLAMA_TAG_PATTERN = r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$"
COMMIT_PATTERN = r"^[0-9a-f]{40}$"
# What `ollama create`/`ollama cp` accept as a local name ([namespace/]model[:tag], see
# ollama's types/model/name.go): parts start with a letter, digit or underscore; no spaces.
OLLAMA_NAME_PATTERN = (
    r"^([A-Za-z0-9_][A-Za-z0-9_-]{0,79}/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?$"
)
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


Runtime = Literal["vllm", "ollama", "transformers"]


class SecretKeyRef(Model):
    name: str = Field(description="Name of a Secret in the LocalLLM's namespace.", min_length=1)
    key: str = Field(default="token", description="Key in the Secret's data.")


class ModelSource(Model):
    name: str = Field(
        description="The model to serve: a Hugging Face repository id (owner/name, e.g. google/gemma-2-9b-it) "
        "for the vllm and transformers runtimes, an Ollama tag (e.g. gemma2:9b) for ollama.",
        min_length=1,
        max_length=200,
    )
    revision: str | None = Field(
        default=None,
        max_length=64,
        description="Pinned revision: the 40-character commit hash of the Hugging Face repository. Required for "
        "vllm and transformers, so that every replica and every restart serves the same weights.",
    )
    served_name: str | None = Field(
        default=None,
        description="The model name clients send in OpenAI requests (vLLM --served-model-name; for ollama the "
        "local name the model is copied to, [namespace/]model[:tag] without spaces). Defaults to model.name.",
        max_length=200,
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="ollama only: import the model from a GGUF file at this HTTP(S) URL (typically a Service "
        "inside the cluster) instead of pulling model.name from the Ollama registry; model.name is then the "
        "local tag it is created under. Needs model.sha256. This is how Ollama serves models without internet.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="The SHA-256 of the file at model.url (64 hex digits): the download is refused unless it matches.",
    )
    parameters: dict[str, Annotated[str, Field(max_length=256, pattern=r"^[^\r\n]*$")]] = Field(
        default_factory=dict,
        max_length=32,
        description="ollama only: Modelfile PARAMETER lines baked into the served model (e.g. num_ctx: '8192', "
        "num_thread: '4', stop: '<|end|>').",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a Hugging Face token for gated or private repositories."
    )
    allow_pickle: bool = Field(
        default=False, description="Also download pickled weights (*.bin, *.pt). Off: safetensors only."
    )
    trust_remote_code: bool = Field(
        default=False, description="Download and run the repository's own Python code. Off unless you trust it."
    )


class Resources(Model):
    gpus: int = Field(
        default=0,
        ge=0,
        le=64,
        description="GPUs per replica (0 = CPU only). For vllm this is also the tensor-parallel size.",
    )
    gpu_resource_name: str | None = Field(
        default=None,
        description="Extended resource that counts GPUs (default: the operator's setting, nvidia.com/gpu).",
    )
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description="CPU request per replica.")
    memory: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, description="Memory request and limit per replica."
    )
    shm_size: str = Field(
        default="8Gi",
        pattern=QUANTITY_PATTERN,
        description="Size of the memory-backed /dev/shm (vllm uses it for tensor-parallel communication).",
    )


class Cache(Model):
    size: str = Field(default="50Gi", pattern=QUANTITY_PATTERN, description="Size of the model cache volume.")
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the cache volume (default: the cluster's default class)."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"] = Field(
        default="ReadWriteOnce",
        description="Access mode of the cache volume. Use ReadWriteMany when replicas may land on several nodes.",
    )
    existing_claim: str | None = Field(
        default=None,
        description="Use this existing PersistentVolumeClaim as the cache instead of creating one. "
        "It is never deleted by the operator.",
    )
    delete_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description="What happens to the cache volume the operator created when the LocalLLM is deleted: "
        "Delete removes it with the LocalLLM, Retain keeps it (and its downloaded weights).",
    )


class EnvVar(Model):
    name: str = Field(description="Environment variable name.", min_length=1)
    value: str | None = Field(default=None, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(default=None, description="Take the value from a Secret key.")


class Engine(Model):
    image: str | None = Field(default=None, description="Override the runtime's container image.")
    args: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=64,
        description="Extra arguments appended to the engine command (vllm serve, sdc-runtime). Not for ollama: "
        "`ollama serve` takes no arguments; configure it with engine.env (OLLAMA_*) and model.parameters.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables for the engine."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length to serve (vllm --max-model-len, ollama num_ctx)."
    )


class Toleration(Model):
    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate (empty: all)."
    )
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


class Scheduling(Model):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations added to the pods. A toleration of the GPU taint is added when gpus > 0.",
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="A core/v1 Affinity, passed to the pods as it is."
    )
    runtime_class_name: str | None = Field(default=None, description="RuntimeClass of the pods (e.g. nvidia).")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")


class Routing(Model):
    weight: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="Share of traffic the orchestrator sends here, relative to the other endpoints serving the "
        "same role. 0 drains it. Move weight step by step to migrate; set it back to roll back.",
    )
    role: Literal["chat", "embedding"] = Field(default="chat", description="What the orchestrator uses this model for.")


class LocalLLMSpec(Model):
    runtime: Runtime = Field(description="Serving engine: vllm, ollama or transformers.")
    model: ModelSource = Field(description="What to serve and where it comes from.")
    resources: Resources = Field(default_factory=Resources, description="GPUs, CPU and memory per replica.")
    cache: Cache = Field(default_factory=Cache, description="The volume that holds the downloaded model.")
    replicas: int = Field(default=1, ge=0, le=100, description="Number of serving pods.")
    engine: Engine = Field(default_factory=Engine, description="Engine image, arguments and environment.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Where the pods may run.")
    routing: Routing = Field(default_factory=Routing, description="How the orchestrator routes to this model.")

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.model.name


# CEL rules on the spec: the API server refuses violating objects with these messages.
SPEC_RULES = [
    {
        "rule": "self.runtime == 'ollama' || self.model.name.matches('" + HF_REPO_PATTERN + "')",
        "message": "model.name must be a Hugging Face repository id (owner/name) for the vllm and transformers "
        "runtimes",
        "fieldPath": ".model.name",
    },
    {
        "rule": "self.runtime != 'ollama' || self.model.name.matches('" + OLLAMA_TAG_PATTERN + "')",
        "message": "model.name must be an Ollama tag (e.g. gemma2:9b) for the ollama runtime",
        "fieldPath": ".model.name",
    },
    {
        "rule": "self.runtime == 'ollama' || (has(self.model.revision) && self.model.revision.matches('"
        + COMMIT_PATTERN
        + "'))",
        "message": "model.revision must be a pinned 40-character commit hash for the vllm and transformers runtimes",
        "fieldPath": ".model.revision",
    },
    {
        # The vllm/vllm-openai image is CUDA-only, and vLLM refuses `--device=cpu` on it.
        "rule": "self.runtime != 'vllm' || self.resources.gpus > 0",
        "message": "the vllm runtime needs resources.gpus > 0 (its image is CUDA-only); serve on CPU with the "
        "ollama or transformers runtime",
        "fieldPath": ".resources.gpus",
    },
    {
        "rule": "self.runtime != 'ollama' || !has(self.engine.args) || size(self.engine.args) == 0",
        "message": "engine.args is not supported for the ollama runtime (`ollama serve` takes no arguments): use "
        "engine.env (OLLAMA_* variables) or model.parameters",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "self.runtime != 'ollama' || !has(self.model.servedName) || self.model.servedName.matches('"
        + OLLAMA_NAME_PATTERN
        + "')",
        "message": "model.servedName must be an Ollama model name ([namespace/]model[:tag]: letters, digits, _ . -; "
        "no spaces) for the ollama runtime",
        "fieldPath": ".model.servedName",
    },
    {
        "rule": "self.runtime == 'ollama' || (!has(self.model.url) && (!has(self.model.parameters) || size(self.model.parameters) == 0))",
        "message": "model.url and model.parameters are for the ollama runtime only",
        "fieldPath": ".model",
    },
    {
        "rule": "!has(self.model.parameters) || self.model.parameters.all(k, k.matches('^[a-z][a-z_]{0,39}$'))",
        "message": "model.parameters keys are Modelfile PARAMETER names (lower case, e.g. num_ctx)",
        "fieldPath": ".model.parameters",
    },
    {
        "rule": "has(self.model.url) == has(self.model.sha256)",
        "message": "model.url and model.sha256 go together: a downloaded file is always checked against its hash",
        "fieldPath": ".model.sha256",
    },
]


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


Phase = Literal["Pending", "Downloading", "Starting", "Ready", "Degraded", "Failed"]


class LocalLLMStatus(Model):
    phase: Phase = Field(
        default="Pending",
        description="Where the model is in its life: Pending, Downloading, Starting, Ready, Degraded or Failed.",
    )
    message: str = Field(default="", description="What is happening or what to fix, in one sentence.")
    endpoint: str | None = Field(default=None, description="Base URL of the OpenAI-compatible API (ends in /v1).")
    served_model_name: str | None = Field(default=None, description="The model name to send in requests.")
    replicas: int = Field(default=0, description="Desired serving pods.")
    ready_replicas: int = Field(default=0, description="Serving pods that are ready.")
    observed_generation: int | None = Field(default=None, description="The spec generation this status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard Kubernetes conditions.")


def semantic_errors(spec: LocalLLMSpec) -> list[str]:
    """Checks CEL cannot express; each error names the field and what to do."""
    errors = []
    if spec.runtime == "ollama" and spec.engine.args:
        errors.append("engine.args: `ollama serve` takes no arguments; use engine.env or model.parameters")
    # vLLM's tensor-parallel rule (attention heads divisible by the size) needs the model's
    # config.json, which the operator never downloads: `sdc-check-model` applies it in the pod.
    for arg in spec.engine.args:
        if re.match(r"^--(model|port|served-model-name|tensor-parallel-size)(=|$)", arg):
            errors.append(f"engine.args: {arg.split('=')[0]} is set by the operator; use the spec field instead")
    return errors
