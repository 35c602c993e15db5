"""Ollama: the `ollama/ollama` image with its model store on the cache volume.

The init container starts a private `ollama serve`, pulls the tag into the
cache (a no-op when it is already there) and stops; so the serving container
starts with the model present and its readiness probe (`ollama show`) only
passes for a model that is really there. The tag travels in an environment
variable, never through the shell's parser.
"""

from __future__ import annotations

from sdc_operator.builders.common import MODEL_MOUNT, LocalLLM, container_security, env_list
from sdc_operator.builders.parts import EngineParts
from sdc_operator.builders.resources import engine_resources
from sdc_operator.settings import OperatorSettings

PORT = 11434
PULL_SCRIPT = """set -eu
ollama serve >/tmp/ollama-pull.log 2>&1 &
server=$!
i=0; until ollama list >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 60 ] && { cat /tmp/ollama-pull.log; exit 1; }; sleep 1; done
ollama pull "$SDC_MODEL"
if [ "$SDC_SERVED_NAME" != "$SDC_MODEL" ]; then ollama cp "$SDC_MODEL" "$SDC_SERVED_NAME"; fi
kill $server
"""


def ollama_parts(llm: LocalLLM, settings: OperatorSettings) -> EngineParts:
    spec = llm.spec
    image = spec.engine.image or settings.ollama_image
    base_env = [
        {"name": "OLLAMA_MODELS", "value": f"{MODEL_MOUNT}/ollama"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{PORT}"},
    ]
    # num_ctx: Ollama's own default (4096 in 0.12) is shorter than the guide's 8192.
    context = spec.engine.max_model_len or settings.ollama_context_length
    base_env.append({"name": "OLLAMA_CONTEXT_LENGTH", "value": str(context)})
    mounts = [{"name": "model-cache", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}]
    pull = {
        "name": "model-download",
        "image": image,
        "command": ["/bin/sh", "-c", PULL_SCRIPT],
        "env": [
            *base_env,
            {"name": "SDC_MODEL", "value": spec.model.name},
            {"name": "SDC_SERVED_NAME", "value": spec.served_name},
        ],
        "volumeMounts": mounts,
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    container = {
        "name": "ollama",
        "image": image,
        "args": ["serve", *spec.engine.args],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [*base_env, *env_list(spec)],
        "resources": engine_resources(spec, settings),
        "volumeMounts": mounts,
        "readinessProbe": {
            "exec": {"command": ["ollama", "show", spec.served_name]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/api/version", "port": PORT},
            "periodSeconds": 15,
            "failureThreshold": 4,
            "timeoutSeconds": 5,
        },
        "securityContext": container_security(),
    }
    return EngineParts(container, PORT, [pull])
