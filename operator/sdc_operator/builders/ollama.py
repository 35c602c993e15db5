"""Ollama: `ollama serve` with its model store on the cache volume.

An init container starts a private `ollama serve` (loopback only, so nothing
can reach it) and makes the served model exist in the cache, then stops:
- model.url set: the GGUF was already downloaded by the fetch init container
  (the fetcher image, checked against model.sha256) straight into Ollama's blob
  store under its digest, so `ollama create` finds the blob and copies nothing.
  This is the way to serve Ollama without internet: the URL points at a file
  served inside the cluster.
- otherwise: `ollama pull` from the Ollama registry, unless `ollama show` finds
  the tag in the cache already (an offline pull of a cached model fails, it is
  not a no-op).
Then `ollama create` gives it the served name and the model.parameters (a
Modelfile `FROM <model or blob>` plus PARAMETER lines; cheap, nothing is copied).
The serving container's readiness (`ollama show`) only passes for a model that
is really there. Names and parameters travel in environment variables, never
through the shell's parser. `ollama serve` takes no arguments (engine.args is
refused at admission).

Metrics: Ollama serves none, so the pod's API port belongs to a sidecar,
`sdc-ollama-exporter` (runtime/sdc_runtime/ollama_exporter.py, in the
runtime/fetcher image): a small reverse proxy that forwards every request to
`ollama serve` on loopback (ENGINE_PORT) and serves GET /metrics in vLLM's
names (queue, running, KV use, prefix-cache counters), so the orchestrator
scores Ollama replicas on their engine's state like vLLM's and sdc-runtime's.
The Service's named port `http` is the proxy's: nothing reaches Ollama past it.
"""

from __future__ import annotations

from typing import Any

from sdc_operator.builders.common import MODEL_MOUNT, LocalLLM, container_security, env_list
from sdc_operator.builders.download import DOWNLOAD_CONTAINER
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.resources import engine_resources
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec

PORT = 11434  # the pod's API port: the exporter's, in front of ollama
ENGINE_PORT = 11435  # `ollama serve`, on loopback only
EXPORTER_CONTAINER = "ollama-exporter"
FETCH_CONTAINER = "model-fetch"
# At a pod's stop (#24's drain; the grace period is the pause + 60 s): the exporter drains for up to 45 s after
# the pause, and ollama, which drops its connections at SIGTERM, is stopped 50 s after the pause.
EXPORTER_DRAIN_S = 45
OLLAMA_OUTLIVES_S = 50
MODELS_DIR = f"{MODEL_MOUNT}/ollama"
PULL_SCRIPT = """set -eu
ollama serve >/tmp/ollama-pull.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
i=0; until ollama list >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 60 ] && { cat /tmp/ollama-pull.log; exit 1; }; sleep 1; done
if [ -n "${SDC_MODEL_FILE:-}" ]; then
  source="$SDC_MODEL_FILE"
elif ollama show "$SDC_MODEL" >/dev/null 2>&1; then
  echo "$SDC_MODEL is in the cache"; source="$SDC_MODEL"
else
  ollama pull "$SDC_MODEL"; source="$SDC_MODEL"
fi
if [ "$source" != "$SDC_SERVED_NAME" ] || [ -n "$SDC_PARAMETERS" ]; then
  printf 'FROM %s\\n%s' "$source" "$SDC_PARAMETERS" >/tmp/Modelfile
  ollama create "$SDC_SERVED_NAME" -f /tmp/Modelfile
fi
"""


def blob_path(sha256: str) -> str:
    """Where Ollama keeps a blob of this digest (its store layout: blobs/sha256-<hex>)."""
    return f"{MODELS_DIR}/blobs/sha256-{sha256}"


def modelfile_parameters(spec: LocalLLMSpec) -> str:
    """PARAMETER lines, sorted so the pod spec (and its hash) is stable."""
    params = dict(spec.model.parameters)
    if spec.engine.max_model_len and "num_ctx" not in params:
        params["num_ctx"] = str(spec.engine.max_model_len)
    return "".join(f"PARAMETER {key} {value}\n" for key, value in sorted(params.items()))


def fetch_container(llm: LocalLLM, settings: OperatorSettings) -> dict[str, Any]:
    """Download model.url into Ollama's blob store, checked against model.sha256."""
    model = llm.spec.model
    assert model.url is not None and model.sha256 is not None  # noqa: S101 - the caller checked
    return {
        "name": FETCH_CONTAINER,
        "image": settings.fetcher_image,
        "command": ["sdc-fetch-url"],
        "args": ["--url", model.url, "--sha256", model.sha256, "--dest", blob_path(model.sha256)],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def exporter_container(llm: LocalLLM, settings: OperatorSettings, context: int) -> dict[str, Any]:
    """The metrics proxy on the pod's API port; it needs ollama's sequences per model and their length."""
    spec = llm.spec
    parameters = dict(spec.model.parameters)
    env = [{"name": "OLLAMA_CONTEXT_LENGTH", "value": str(parameters.get("num_ctx") or context)}]
    env += [e for e in env_list(spec) if e["name"] == "OLLAMA_NUM_PARALLEL"]  # the user's, as ollama reads it
    return {
        "name": EXPORTER_CONTAINER,
        "image": settings.fetcher_image,
        "command": ["sdc-ollama-exporter"],
        "args": [
            "--listen",
            f"0.0.0.0:{PORT}",
            "--upstream",
            f"127.0.0.1:{ENGINE_PORT}",
            "--drain-timeout",
            str(EXPORTER_DRAIN_S),
            # Far above any prompt the orchestrator sends (64,000 characters and tools), far below its memory.
            "--max-body-bytes",
            str(8 << 20),
        ],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Its own page: the proxy's health, not ollama's (the engine container's probes are ollama's).
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": PORT}, "periodSeconds": 10, "timeoutSeconds": 2},
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": PORT},
            "periodSeconds": 15,
            "failureThreshold": 4,
            "timeoutSeconds": 5,
        },
        # One Python event loop relaying bytes: little CPU, tens of MiB (no CPU limit: throttling would
        # slow every stream it relays).
        "resources": {"requests": {"cpu": "50m", "memory": "48Mi"}, "limits": {"memory": "192Mi"}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def ollama_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    image = spec.engine.image or settings.ollama_image
    # ollama writes ~/.ollama/id_ed25519 on start: HOME must be writable for a non-root user.
    base_env = [{"name": "OLLAMA_MODELS", "value": MODELS_DIR}, {"name": "HOME", "value": "/tmp"}]
    # num_ctx: Ollama's own default is shorter than the guide's 8192.
    context = spec.engine.max_model_len or settings.ollama_context_length
    base_env.append({"name": "OLLAMA_CONTEXT_LENGTH", "value": str(context)})
    mounts = [{"name": "model-cache", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}]
    init_env = [
        *base_env,
        # The private server of the init container listens on loopback only, and must not prune
        # the blob the fetch step just wrote (no manifest references it yet).
        {"name": "OLLAMA_HOST", "value": f"127.0.0.1:{PORT}"},
        {"name": "OLLAMA_NOPRUNE", "value": "1"},
        {"name": "SDC_MODEL", "value": spec.model.name},
        {"name": "SDC_SERVED_NAME", "value": spec.served_name},
        {"name": "SDC_PARAMETERS", "value": modelfile_parameters(spec)},
    ]
    inits: list[dict[str, Any]] = []
    if spec.model.url and spec.model.sha256:
        inits.append(fetch_container(llm, settings))
        init_env.append({"name": "SDC_MODEL_FILE", "value": blob_path(spec.model.sha256)})
    pull = {
        "name": DOWNLOAD_CONTAINER,
        "image": image,
        "command": ["/bin/sh", "-c", PULL_SCRIPT],
        "env": [*env_list(spec), *init_env],  # ours last: a user's OLLAMA_HOST cannot open the private server
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": mounts,
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    inits.append(pull)
    container = {
        "name": "ollama",
        "image": image,
        "command": ["ollama"],
        "args": ["serve"],
        # Loopback only: every request comes through the exporter (ours last, though OLLAMA_HOST is refused
        # in engine.env at admission anyway).
        "env": [*base_env, *env_list(spec), {"name": "OLLAMA_HOST", "value": f"127.0.0.1:{ENGINE_PORT}"}],
        "resources": engine_resources(spec, settings),
        "volumeMounts": mounts,
        # The CLI is a client of the server in the same container (its OLLAMA_HOST names it): `show` passes
        # once the model is there, `list` as long as the server answers (the kubelet cannot reach loopback).
        "readinessProbe": {
            # Every 3 s (was 10): a pod's Ready waits for the next run, part of a scale from zero (#24);
            # still 30 s of failures before a busy pod is taken out.
            "exec": {"command": ["ollama", "show", spec.served_name]},
            "periodSeconds": 3,
            "timeoutSeconds": 5,
            "failureThreshold": 10,
        },
        "livenessProbe": {
            "exec": {"command": ["ollama", "list"]},
            "periodSeconds": 15,
            "failureThreshold": 4,
            "timeoutSeconds": 5,
        },
        "securityContext": container_security(),
    }
    if settings.engine_drain_seconds > 0:
        # `ollama serve` drops every open connection at SIGTERM, so it must outlive the exporter's drain: the
        # exporter gets the common pause, then stops accepting and waits for the answers in flight (up to
        # EXPORTER_DRAIN_S); ollama gets its SIGTERM only after that, inside the pod's grace period.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.engine_drain_seconds + OLLAMA_OUTLIVES_S}}}
    return EngineParts(container, PORT, inits, sidecars=[exporter_container(llm, settings, context)])
