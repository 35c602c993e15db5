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
from decimal import Decimal, InvalidOperation
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
Quantization = Literal["awq", "gptq", "fp8", "bitsandbytes", "q4_0", "q4_K_M", "q5_K_M", "q8_0", "fp16", "int4", "int8"]
# What vLLM's CPU backend can load (its cpu_awq and CPU Marlin kernels); fp8 and bitsandbytes are CUDA kernels.
VLLM_CPU_QUANTIZATION = ("awq", "gptq")
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
    parameter_count: str | None = Field(
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
        default=False,
        description="Download and run the repository's own Python code. Off unless you trust it; the "
        "repository must also be in the operator's remote-code allow-list.",
    )


class Resources(Model):
    gpus: int = Field(
        default=0,
        ge=0,
        le=64,
        description="GPUs per replica (0 = CPU only; vllm then runs its CPU image). For vllm this is also the "
        "tensor-parallel size.",
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
        default=None,
        description="StorageClass of the cache volume (default: the cluster's default class). Fixed once the "
        "volume exists: to change it, create a LocalLLM under a new name (or set existingClaim).",
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"] = Field(
        default="ReadWriteOnce",
        description="Access mode of the cache volume. Use ReadWriteMany when replicas may land on several nodes. "
        "Fixed once the volume exists: to change it, create a LocalLLM under a new name (or set existingClaim).",
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
    name: str = Field(
        description="Environment variable name. Names the operator sets itself (HF_HUB_OFFLINE, HOME, "
        "OLLAMA_HOST, ...) are refused.",
        min_length=1,
        max_length=256,
    )
    value: str | None = Field(default=None, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(default=None, description="Take the value from a Secret key.")


class Engine(Model):
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Override the runtime's container image. Must match the operator's image allow-list "
        "(default: the official vLLM and Ollama images and sdc-runtime).",
    )
    args: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=64,
        description="Extra arguments appended to the engine command (vllm serve, sdc-runtime). Arguments that "
        "change the model, tokenizer, port or remote-code setting are refused: use model.* and trustRemoteCode "
        "instead. Flags only (--name=value or --name value): a positional argument (a bare model name) is refused. "
        "Not for ollama: `ollama serve` takes no arguments; configure it with engine.env (OLLAMA_*) and "
        "model.parameters.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables for the engine."
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        description="Context length to serve (vllm and transformers --max-model-len, ollama num_ctx).",
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
        description="Tolerations added to the pods. A toleration of the GPU taint is added when gpus > 0. Keys "
        "outside the operator's toleration allow-list are refused.",
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="A core/v1 Affinity, passed to the pods as it is."
    )
    runtime_class_name: str | None = Field(default=None, description="RuntimeClass of the pods (e.g. nvidia).")
    priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the pods; only classes in the operator's allow-list."
    )


class Routing(Model):
    weight: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="Share of traffic the orchestrator sends here, relative to the other endpoints serving the "
        "same role. 0 drains it. Move weight step by step to migrate; set it back to roll back.",
    )
    role: Literal["chat", "embedding"] = Field(default="chat", description="What the orchestrator uses this model for.")
    pool: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Named routing pool. An orchestrator serves only the LocalLLMs of its own namespace (and the "
        "namespaces its chart opts into) whose pool equals its routing.pool value; unset matches an orchestrator "
        "without a pool.",
    )


# Who writes spec.replicas when it changes by itself: the orchestrator, through the /scale subresource, with
# this field manager (status.py names it when a model is at zero; the orchestrator's scale client sends it).
AUTOSCALER_MANAGER = "sdc-autoscaler"


class Autoscaling(Model):
    """Bounds and signals of demand-driven scaling; spec.replicas stays the one number that is scaled."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                    "fieldPath": ".minReplicas",
                }
            ]
        },
    )

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Fewest serving pods. 0 allows scale to zero: after scaleDownDelaySeconds without requests "
        "the model is scaled to zero, and the next request is held by the orchestrator while one replica starts.",
    )
    max_replicas: int = Field(ge=1, le=100, description="Most serving pods the autoscaler may ask for.")
    target_waiting_per_replica: int = Field(
        default=4,
        ge=1,
        le=10000,
        description="Requests waiting in each engine's queue (vllm:num_requests_waiting) that add a replica "
        "when exceeded on average.",
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long a model must be idle (no request, empty queues) before it is scaled down by one "
        "replica, or to minReplicas=0; also the stabilization window that keeps it from flapping.",
    )


# CEL on the spec for autoscaling (crd.py adds them to SPEC_RULES): the /scale subresource and
# `kubectl scale` write spec.replicas, and these rules hold on those writes too.
AUTOSCALING_RULES = [
    {
        "rule": "!has(self.autoscaling) || (self.replicas >= self.autoscaling.minReplicas && "
        "self.replicas <= self.autoscaling.maxReplicas)",
        "message": "replicas must be within autoscaling.minReplicas and autoscaling.maxReplicas",
        "fieldPath": ".replicas",
    },
]


class LocalLLMSpec(Model):
    runtime: Runtime = Field(description="Serving engine: vllm, ollama or transformers.")
    model: ModelSource = Field(description="What to serve and where it comes from.")
    resources: Resources = Field(default_factory=Resources, description="GPUs, CPU and memory per replica.")
    cache: Cache = Field(default_factory=Cache, description="The volume that holds the downloaded model.")
    replicas: int = Field(default=1, ge=0, le=100, description="Number of serving pods.")
    engine: Engine = Field(default_factory=Engine, description="Engine image, arguments and environment.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Where the pods may run.")
    routing: Routing = Field(default_factory=Routing, description="How the orchestrator routes to this model.")
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale with demand between minReplicas and maxReplicas (0 allowed). Unset: replicas is fixed "
        "(it can still be changed with `kubectl scale llm NAME --replicas=N`, an HPA or KEDA on /scale).",
    )

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.model.name


# Engine flags the operator sets, or that would load other code or weights than the pinned model:
# refused in engine.args. argparse accepts any unambiguous prefix of a flag and vLLM accepts `_` for `-`,
# so the pattern refuses every prefix of these names with either separator.
OPERATOR_FLAGS = (
    "model",
    "tokenizer",
    "revision",
    "tokenizer-revision",
    "code-revision",
    "port",
    "host",
    "served-model-name",
    "tensor-parallel-size",
    "trust-remote-code",
    "download-dir",
    "load-format",
    "config",
    "hf-config-path",
    "hf-token",
    "speculative-config",
    "lora-modules",
    "uds",
)
# Environment the operator sets (or that moves where weights come from): refused in engine.env.
OPERATOR_ENV = (
    "HOME",
    "OLLAMA_HOST",
    "OLLAMA_MODELS",
    "OLLAMA_CONTEXT_LENGTH",
    "VLLM_NO_USAGE_STATS",
    "VLLM_USE_MODELSCOPE",
    "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE",
    "HUGGING_FACE_HUB_TOKEN",
)
OPERATOR_ENV_PREFIXES = ("HF_", "SDC_")
# Environment that changes how code loads: a preloaded library (LD_PRELOAD, LD_AUDIT), a library or import
# path (LD_LIBRARY_PATH, PYTHONPATH, PATH), an interpreter's startup code (PYTHONSTARTUP, BASH_ENV,
# NODE_OPTIONS, PERL5OPT, RUBYOPT, JAVA_TOOL_OPTIONS), glibc's loadable modules (GCONV_PATH), OpenSSL's
# config and providers, or vLLM's pickle deserialization. Whoever may write engine.env would otherwise run
# code of their choosing in the operator's pod. Refused in engine.env (harmless PYTHON* knobs excepted).
CODE_ENV = (
    "PATH",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "BASH_ENV",
    "ENV",
    "NODE_OPTIONS",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "OPENSSL_CONF",
    "OPENSSL_MODULES",
    "VLLM_ALLOW_INSECURE_SERIALIZATION",
)
CODE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON")
SAFE_PYTHON_ENV = (
    "PYTHONUNBUFFERED",
    "PYTHONIOENCODING",
    "PYTHONHASHSEED",
    "PYTHONFAULTHANDLER",
    "PYTHONDONTWRITEBYTECODE",
)
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _prefixes(flag: str) -> str:
    """An RE2 group matching every non-empty prefix of `flag`, `-` and `_` alike."""
    out = ""
    for char in reversed(flag):
        atom = "[-_]" if char == "-" else char
        out = f"{atom}(?:{out})?" if out else atom
    return out


FORBIDDEN_ARG_PATTERN = "^--?(?:tp|" + "|".join(_prefixes(f) for f in OPERATOR_FLAGS) + ")(?:=.*)?$"

# vLLM flags that load code from a path or by name (a parser plugin file, logits processor or worker classes,
# an ASGI middleware, a KV connector module) or open the file system to requests (local media paths).
# Refused in engine.args, every unambiguous abbreviation included; each flag's number is the length of its
# shortest refused prefix (`--reasoning-parser` itself is a legitimate flag).
CODE_FLAGS = {
    "tool-parser-plugin": 1,
    "reasoning-parser-plugin": len("reasoning-parser-"),
    "logits-processors": 1,
    "middleware": 1,
    "worker-cls": 1,
    "worker-extension-cls": 1,
    "scheduler-cls": 1,
    "kv-transfer-config": 1,
    "allowed-local-media-path": 1,
}


def _prefixes_from(flag: str, shortest: int) -> str:
    head = flag[:shortest].replace("-", "[-_]")
    rest = flag[shortest:]
    return head + (f"(?:{_prefixes(rest)})?" if rest else "")


CODE_ARG_PATTERN = "^--?(?:" + "|".join(_prefixes_from(f, n) for f, n in CODE_FLAGS.items()) + ")(?:=.*)?$"

# `--distributed-executor-backend` takes a backend's name or a class to import ("evil.module.Executor"): only
# vLLM's own backends pass, written with '=' so that the value is in the same argument as the flag (the CEL
# rule judges one argument at a time). Every prefix counts, as above (vLLM's parser takes abbreviations).
EXECUTOR_BACKENDS = ("mp", "ray", "uni", "external_launcher")
EXECUTOR_FLAG_PATTERN = "^--?" + _prefixes_from("distributed-executor-backend", 1) + "(?:=.*)?$"
SAFE_EXECUTOR_PATTERN = (
    "^--?" + _prefixes_from("distributed-executor-backend", 1) + "=(?:" + "|".join(EXECUTOR_BACKENDS) + ")$"
)
# `--chat-template` is read as a file when a file of that name opens (vLLM and sdc-runtime alike), else
# taken as the template: a path would render any file the engine can read (/proc/self/environ: its tokens)
# into prompts. A value is inline only when it holds a Jinja tag (`{{` or `{%`) and no '/': a path needs a
# '/' to leave the working directory (even through a directory named like a tag on a model volume), and a
# name without one would be looked up there (or in vLLM's template directory). Inside a template's string
# literals '/' is written \u002f (Jinja decodes it). Abbreviations of the flag are ambiguous in vLLM's
# parser (--chat-template-content-format), so its two spellings are the whole flag.
TEMPLATE_FLAG_PATTERN = "^--?chat[-_]template(?:=.*)?$"
INLINE_TEMPLATE_PATTERN = "^--?chat[-_]template=[^/]*[{][{%][^/]*$"


def refused_value_arg(arg: str) -> str | None:
    """Why an argument whose flag is allowed with some values only is refused (None: it is allowed)."""
    if re.match(EXECUTOR_FLAG_PATTERN, arg) and not re.match(SAFE_EXECUTOR_PATTERN, arg):
        return (
            f"{arg.split('=')[0]} with a value other than {', '.join(EXECUTOR_BACKENDS)} names a class to load; "
            f"write --distributed-executor-backend={EXECUTOR_BACKENDS[0]} (or {', '.join(EXECUTOR_BACKENDS[1:])})"
        )
    if re.match(TEMPLATE_FLAG_PATTERN, arg) and not re.match(INLINE_TEMPLATE_PATTERN, arg):
        return (
            f"{arg.split('=')[0]} given a path (or without '=') would read a file; give the template inline: "
            "--chat-template={% ... %} with {{ or {% and no '/' (write it \\u002f inside the template's strings)"
        )
    return None


def is_code_env(name: str) -> bool:
    return name in CODE_ENV or (name.startswith(CODE_ENV_PREFIXES) and name not in SAFE_PYTHON_ENV)


# A bare word in engine.args that no flag takes as its value is a positional argument: `vllm serve` would
# read it as the model (or refuse to start), whatever model.* says. A word may only follow a flag written
# without '=' (`--max-num-seqs 8`); `--` (everything after it is positional) is refused too. A flag is
# `-x` or `--x...` with a letter first, so `-1` is a value, not a flag.
FLAG_PATTERN = r"^--?[A-Za-z]"
_FLAG_EQ = r"--?[A-Za-z][^=\n]*=[^\n]*"
_FLAG_BARE = r"--?[A-Za-z][^=\n]*"
_VALUE = r"(?:|[^-\n][^\n]*|-|-[^-A-Za-z\n][^\n]*|--[^A-Za-z\n][^\n]*)"
_UNIT = f"(?:{_FLAG_EQ}|{_FLAG_BARE}(?:\\n{_VALUE})?)"
# The whole list joined by line breaks: one RE2 match in CEL, which has no list indexes to look back with.
ARGS_SHAPE_PATTERN = f"^{_UNIT}(?:\\n{_UNIT})*$"


def positional_args(args: list[str]) -> list[str]:
    """The arguments an engine's parser would take as positional: words that follow no flag without '='."""
    out = []
    takes_value = False
    for arg in args:
        if "\n" in arg:  # the CEL rule joins the list with line breaks: one inside an argument is refused
            out.append(arg)
        elif re.match(FLAG_PATTERN, arg):
            takes_value = "=" not in arg
            continue
        elif not takes_value or arg == "--":
            out.append(arg)
        takes_value = False
    return out


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _immutable_cache_rule(expr: str, field: str) -> dict[str, str]:
    """A transition rule: the cache claim's field cannot change in place (PersistentVolumeClaims forbid it)."""
    return {
        "rule": "has(self.cache.existingClaim) || has(oldSelf.cache.existingClaim) || " + expr,
        "message": f"cache.{field} cannot change once the cache volume exists (a PersistentVolumeClaim keeps it "
        "for life): to migrate, create a LocalLLM under a new name with the new value (or point "
        "cache.existingClaim at a claim that has it), move traffic with routing.weight, then delete this one",
        "fieldPath": f".cache.{field}",
        "reason": "FieldValueForbidden",
    }


# CEL rules on the whole object: what metadata.name must be to name every child.
ROOT_RULES = [
    {
        "rule": "self.metadata.name.size() <= 63 && self.metadata.name.matches('" + DNS_LABEL_PATTERN + "')",
        "message": "metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a letter, "
        "at most 63 characters, no dots): it names the LocalLLM's Service, Deployment and pods",
        # No fieldPath: the API server accepts only paths inside the schema, and metadata has none.
        "reason": "FieldValueInvalid",
    },
]

# CEL rules on the spec: the API server refuses violating objects with these messages.
SPEC_RULES = [
    {
        "rule": "!has(self.engine.args) || self.engine.args.all(a, !a.matches('" + FORBIDDEN_ARG_PATTERN + "'))",
        "message": "engine.args must not set the model, tokenizer, revision, port, host, served name, tensor "
        "parallelism, download or load format, or remote code: the operator sets them from model.*, "
        "resources.gpus and model.trustRemoteCode",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "!has(self.engine.args) || size(self.engine.args) == 0 || "
        "(self.engine.args.all(a, !a.contains('\\n')) && self.engine.args.join('\\n').matches('"
        + ARGS_SHAPE_PATTERN
        + "'))",
        "message": "engine.args must be flags (--name=value or --name value): a word that follows no flag is a "
        "positional argument, which the engine would take as the model (set model.* instead); `--` and line "
        "breaks are not allowed",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "!has(self.engine.args) || self.engine.args.all(a, !a.matches('" + CODE_ARG_PATTERN + "'))",
        "message": "engine.args must not load code from a path or by name ("
        + ", ".join(f"--{f}" for f in CODE_FLAGS)
        + "): the engine runs only the code of its image",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "!has(self.engine.args) || self.engine.args.all(a, !a.matches('"
        + EXECUTOR_FLAG_PATTERN
        + "') || a.matches('"
        + SAFE_EXECUTOR_PATTERN
        + "'))",
        "message": "engine.args must not load code by name: --distributed-executor-backend takes a class to "
        "import; write --distributed-executor-backend=" + ", ".join(EXECUTOR_BACKENDS) + " (one argument, with '=')",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "!has(self.engine.args) || self.engine.args.all(a, !a.matches('"
        + TEMPLATE_FLAG_PATTERN
        + "') || a.matches('"
        + INLINE_TEMPLATE_PATTERN
        + "'))",
        "message": "engine.args must not read files by path: --chat-template must be an inline Jinja template in "
        "one argument, --chat-template={% ... %} (with {{ or {%, and no '/': write it \\u002f inside the "
        "template's strings), not a file",
        "fieldPath": ".engine.args",
    },
    {
        "rule": "!has(self.engine.env) || self.engine.env.all(e, !(e.name in "
        + _cel_list(CODE_ENV)
        + ") && ("
        + " && ".join(f"!e.name.startsWith('{p}')" for p in CODE_ENV_PREFIXES)
        + " || e.name in "
        + _cel_list(SAFE_PYTHON_ENV)
        + "))",
        "message": "engine.env must not change how code loads ("
        + ", ".join(CODE_ENV)
        + ", "
        + ", ".join(f"{p}*" for p in CODE_ENV_PREFIXES)
        + "; allowed: "
        + ", ".join(SAFE_PYTHON_ENV)
        + ")",
        "fieldPath": ".engine.env",
    },
    {
        "rule": "!has(self.engine.env) || self.engine.env.all(e, !(e.name in "
        + _cel_list(OPERATOR_ENV)
        + ") && "
        + " && ".join(f"!e.name.startsWith('{p}')" for p in OPERATOR_ENV_PREFIXES)
        + ")",
        "message": "engine.env must not set variables the operator owns ("
        + ", ".join(OPERATOR_ENV)
        + ", "
        + ", ".join(f"{p}*" for p in OPERATOR_ENV_PREFIXES)
        + ")",
        "fieldPath": ".engine.env",
    },
    _immutable_cache_rule("self.cache.accessMode == oldSelf.cache.accessMode", "accessMode"),
    _immutable_cache_rule(
        "(has(self.cache.storageClassName) ? (has(oldSelf.cache.storageClassName) && "
        "self.cache.storageClassName == oldSelf.cache.storageClassName) : !has(oldSelf.cache.storageClassName))",
        "storageClassName",
    ),
    {
        "rule": "has(self.cache.existingClaim) || has(oldSelf.cache.existingClaim) || "
        "quantity(self.cache.size).compareTo(quantity(oldSelf.cache.size)) >= 0",
        "message": "cache.size cannot shrink (volumes only grow): to migrate, create a LocalLLM under a new name "
        "with the smaller cache, move traffic with routing.weight, then delete this one",
        "fieldPath": ".cache.size",
        "reason": "FieldValueForbidden",
    },
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
        # bitsandbytes' 4/8-bit kernels are CUDA-only: on CPU sdc-runtime would exit at load, crash-looping.
        "rule": "self.runtime != 'transformers' || !has(self.engine.quantization) || self.resources.gpus > 0",
        "message": "engine.quantization int4/int8 (bitsandbytes) needs a GPU: set resources.gpus > 0, or serve "
        "unquantized on CPU",
        "fieldPath": ".engine.quantization",
    },
    {
        # gpus: 0 runs the CPU vLLM image (vllm-cpu); its CPU kernels load AWQ and GPTQ weights only.
        "rule": "self.runtime != 'vllm' || self.resources.gpus > 0 || !has(self.engine.quantization) || "
        "self.engine.quantization in " + _cel_list(VLLM_CPU_QUANTIZATION),
        "message": "vllm on CPU (resources.gpus: 0) loads " + " or ".join(VLLM_CPU_QUANTIZATION) + " weights only: "
        "fp8 and bitsandbytes need a GPU (set resources.gpus, or use unquantized or AWQ/GPTQ weights)",
        "fieldPath": ".engine.quantization",
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
# The phases in which a LocalLLM has an endpoint and is published (status, publish, triggers read this one list).
SERVING_PHASES: tuple[Phase, ...] = ("Ready", "Degraded")


class DownloadStatus(Model):
    """How far the model download is, from the download step's newest progress line (while Downloading)."""

    bytes_done: int = Field(description="Bytes of the snapshot on the volume so far (partial files included).")
    bytes_total: int = Field(description="Bytes of the whole snapshot (the files the fetcher's gate lets through).")
    percent: float = Field(description="bytesDone as a percentage of bytesTotal.")
    files_done: int = Field(description="Files complete and on the volume.")
    files_total: int = Field(description="Files in the snapshot.")
    eta_seconds: int | None = Field(default=None, description="Seconds left at the rate so far (absent at first).")


class LocalLLMStatus(Model):
    phase: Phase = Field(
        default="Pending",
        description="Where the model is in its life: Pending, Downloading, Starting, Ready, Degraded or Failed.",
    )
    message: str = Field(default="", description="What is happening or what to fix, in one sentence.")
    endpoint: str | None = Field(default=None, description="Base URL of the OpenAI-compatible API (ends in /v1).")
    served_model_name: str | None = Field(default=None, description="The model name to send in requests.")
    replicas: int = Field(
        default=0,
        description="Serving pods that exist now (the Deployment's status.replicas): the /scale subresource's "
        "current count. Ready ones are readyReplicas.",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the serving pods (the /scale subresource's, for an HPA or KEDA).",
    )
    ready_replicas: int = Field(default=0, description="Serving pods that are ready.")
    observed_generation: int | None = Field(default=None, description="The spec generation this status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard Kubernetes conditions.")
    download: DownloadStatus | None = Field(
        default=None, description="Progress of the model download while the phase is Downloading; absent otherwise."
    )


def semantic_errors(spec: LocalLLMSpec) -> list[str]:
    """Checks CEL cannot express; each error names the field and what to do."""
    errors = []
    if spec.runtime == "ollama" and spec.engine.args:
        errors.append("engine.args: `ollama serve` takes no arguments; use engine.env or model.parameters")
    errors.extend(quantization_errors(spec))
    # vLLM's tensor-parallel rule (attention heads divisible by the size) needs the model's
    # config.json, which the operator never downloads: `sdc-check-model` applies it in the pod.
    for arg in spec.engine.args:  # the CRD's CEL rule says the same; this covers objects admitted before it
        if re.match(FORBIDDEN_ARG_PATTERN, arg):
            errors.append(f"engine.args: {arg.split('=')[0]} is set by the operator; use the spec field instead")
        elif re.match(CODE_ARG_PATTERN, arg):
            errors.append(f"engine.args: {arg.split('=')[0]} loads code from a path or by name; not allowed")
        elif reason := refused_value_arg(arg):
            errors.append(f"engine.args: {reason}")
    if positional := positional_args(spec.engine.args):
        errors.append(
            f"engine.args: {positional[0]!r} follows no flag: the engine would take it as a positional argument "
            "(the model); write --name=value, and set the model in model.*"
        )
    for var in spec.engine.env:
        if var.name in OPERATOR_ENV or var.name.startswith(OPERATOR_ENV_PREFIXES):
            errors.append(f"engine.env: {var.name} is set by the operator")
        elif is_code_env(var.name):
            errors.append(f"engine.env: {var.name} changes how the engine loads code; not allowed")
    return errors


_QUANTITY_SCALE = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(value: str) -> Decimal | None:
    """A Kubernetes quantity ("50Gi", "500m", "1.5") as a number; None when it is not one."""
    if not re.match(QUANTITY_PATTERN, value):
        return None
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E"):
        if value.endswith(suffix):
            try:
                return Decimal(value[: -len(suffix)]) * _QUANTITY_SCALE[suffix]
            except InvalidOperation:
                return None
    return Decimal(value)


def quantization_errors(spec: LocalLLMSpec) -> list[str]:
    """The quantization rules CEL also enforces, for objects that reach the operator another way."""
    quant = spec.engine.quantization
    errors = []
    if quant and quant not in QUANTIZATION_BY_RUNTIME[spec.runtime]:
        allowed = ", ".join(QUANTIZATION_BY_RUNTIME[spec.runtime])
        errors.append(f"engine.quantization={quant}: {spec.runtime} takes one of {allowed}")
    elif quant and spec.runtime == "ollama" and not spec.model.name.lower().endswith(f"-{quant.lower()}"):
        errors.append(f"engine.quantization={quant}: an Ollama tag ending in -{quant} (model.name={spec.model.name})")
    if quant and spec.runtime == "transformers" and spec.resources.gpus == 0:
        errors.append(f"engine.quantization={quant} (bitsandbytes) needs a GPU: set resources.gpus > 0")
    if quant and any(re.match(r"^--(quantization|load-in-[48]bit)(=|$)", a) for a in spec.engine.args):
        errors.append("engine.args: --quantization is set by engine.quantization; set it there only")
    if quant and spec.runtime == "vllm" and spec.resources.gpus == 0 and quant not in VLLM_CPU_QUANTIZATION:
        errors.append(
            f"engine.quantization={quant}: vllm on CPU (resources.gpus: 0) loads "
            + " or ".join(VLLM_CPU_QUANTIZATION)
            + " weights only; set resources.gpus for this format"
        )
    if spec.model.source is not None and spec.runtime == "ollama":
        errors.append("model.source: Ollama pulls tags; a model on a volume needs vllm or transformers")
    return errors
