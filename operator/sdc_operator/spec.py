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


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


Runtime = Literal["vllm", "ollama", "transformers"]
Quantization = Literal["awq", "gptq", "fp8", "bitsandbytes", "q4_0", "q4_K_M", "q5_K_M", "q8_0", "fp16", "int4", "int8"]
QUANTIZATION_BY_RUNTIME: dict[str, tuple[str, ...]] = {
    "vllm": ("awq", "gptq", "fp8", "bitsandbytes"),
    "ollama": ("q4_0", "q4_K_M", "q5_K_M", "q8_0", "fp16"),
    "transformers": ("int4", "int8"),
}


class SecretKeyRef(Model):
    name: str = Field(description="Name of a Secret in the LocalLLM's namespace.", min_length=1)
    key: str = Field(default="token", description="Key in the Secret's data.")


class ModelVolume(Model):
    claim_name: str = Field(
        description="An existing PersistentVolumeClaim in the LocalLLM's namespace that holds the model.",
        min_length=1,
        max_length=253,
    )
    path: str = Field(
        description="Directory of the model inside that volume (config.json and safetensors), relative.",
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$",
    )


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
        description="The model name clients send in OpenAI requests (vLLM --served-model-name). "
        "Defaults to model.name.",
        max_length=200,
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a Hugging Face token for gated or private repositories."
    )
    parameters: str | None = Field(
        default=None,
        pattern=r"^([0-9]+x)?[0-9]+(\.[0-9]+)?[BM]$",
        description="Parameter count (e.g. 9B, 500M, 8x7B) for the GPU fit check (condition Fits). "
        "Default: the size in the model's name.",
    )
    source: ModelVolume | None = Field(
        default=None,
        description="Serve a model already on a volume (e.g. your fine-tuned weights) instead of downloading "
        "model.name: mounted read-only, no download step, no revision needed. vllm and transformers only.",
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
        default_factory=list, max_length=64, description="Extra arguments appended to the engine command."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables for the engine."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length to serve (vllm --max-model-len, ollama num_ctx)."
    )
    quantization: Quantization | None = Field(
        default=None,
        description="How the weights are quantized. vllm: awq, gptq, fp8 or bitsandbytes (--quantization); "
        "ollama: the tag's suffix (q4_0, q4_K_M, q5_K_M, q8_0, fp16; model.name must end in -<suffix>); "
        "transformers: int4 or int8 (bitsandbytes, GPU only).",
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
        "rule": "self.runtime == 'ollama' || has(self.model.source) || (has(self.model.revision) && self.model.revision.matches('"
        + COMMIT_PATTERN
        + "'))",
        "message": "model.revision must be a pinned 40-character commit hash for the vllm and transformers runtimes",
        "fieldPath": ".model.revision",
    },
    {
        "rule": "self.runtime != 'ollama' || !has(self.model.source)",
        "message": "model.source (a model on a volume) is for the vllm and transformers runtimes; Ollama pulls tags",
        "fieldPath": ".model.source",
    },
    *[
        {
            "rule": f"self.runtime != '{runtime}' || !has(self.engine.quantization) || self.engine.quantization in "
            + "["
            + ", ".join(f"'{q}'" for q in allowed)
            + "]",
            "message": f"engine.quantization for {runtime} must be one of: {', '.join(allowed)}",
            "fieldPath": ".engine.quantization",
        }
        for runtime, allowed in QUANTIZATION_BY_RUNTIME.items()
    ],
    {
        "rule": "self.runtime != 'ollama' || !has(self.engine.quantization) || "
        "self.model.name.lowerAscii().endsWith('-' + self.engine.quantization.lowerAscii())",
        "message": "for ollama, engine.quantization is the tag's suffix: model.name must end in -<quantization> "
        "(e.g. gemma2:9b-instruct-q8_0)",
        "fieldPath": ".engine.quantization",
    },
    {
        "rule": "self.runtime != 'vllm' || self.resources.gpus > 0 || self.engine.args.exists(a, a == '--device=cpu')",
        "message": "the vllm runtime needs resources.gpus > 0 (or engine.args containing --device=cpu)",
        "fieldPath": ".resources.gpus",
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
    if spec.runtime == "vllm" and spec.resources.gpus > 1 and spec.resources.gpus & (spec.resources.gpus - 1):
        errors.append(f"resources.gpus={spec.resources.gpus}: vLLM tensor parallelism needs a power of two")
    errors.extend(quantization_errors(spec))
    for arg in spec.engine.args:
        if re.match(r"^--(model|port|served-model-name|tensor-parallel-size)(=|$)", arg):
            errors.append(f"engine.args: {arg.split('=')[0]} is set by the operator; use the spec field instead")
    return errors


def quantization_errors(spec: LocalLLMSpec) -> list[str]:
    """The quantization rules CEL also enforces, for objects that reach the operator another way."""
    quant = spec.engine.quantization
    errors = []
    if quant and quant not in QUANTIZATION_BY_RUNTIME[spec.runtime]:
        allowed = ", ".join(QUANTIZATION_BY_RUNTIME[spec.runtime])
        errors.append(f"engine.quantization={quant}: {spec.runtime} takes one of {allowed}")
    elif quant and spec.runtime == "ollama" and not spec.model.name.lower().endswith(f"-{quant.lower()}"):
        errors.append(f"engine.quantization={quant}: an Ollama tag ending in -{quant} (model.name={spec.model.name})")
    if quant and any(re.match(r"^--(quantization|load-in-[48]bit)(=|$)", a) for a in spec.engine.args):
        errors.append("engine.args: --quantization is set by engine.quantization; set it there only")
    if spec.model.source is not None and spec.runtime == "ollama":
        errors.append("model.source: Ollama pulls tags; a model on a volume needs vllm or transformers")
    return errors
