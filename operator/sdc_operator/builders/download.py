"""The model download step for Hugging Face runtimes: an init container.

An init container rather than a Job: it runs on the node that will serve, so a
ReadWriteOnce cache works, and no pod can start serving before the weights are
there. `sdc-fetch-model` writes a completion marker, so every later start of a
pod on the same cache finds the snapshot and exits in a second: one download
per cache, however often pods restart.
"""

from __future__ import annotations

from typing import Any

from sdc_operator.builders.common import MODEL_MOUNT, LocalLLM, container_security
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import parse_quantity

DOWNLOAD_CONTAINER = "model-download"


def download_steps(llm: LocalLLM, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The init containers that bring the weights: none when they are already on a volume (model.source)."""
    return [] if llm.spec.model.source is not None else [hf_download_container(llm, settings)]


def hf_download_container(llm: LocalLLM, settings: OperatorSettings) -> dict[str, Any]:
    model = llm.spec.model
    args = [
        "--repo",
        model.name,
        "--revision",
        str(model.revision),
        "--cache",
        MODEL_MOUNT,
        "--allow",
        ",".join(settings.allowed_sources),
    ]
    cache_bytes = parse_quantity(llm.spec.cache.size)
    if not llm.spec.cache.existing_claim and cache_bytes:
        args += ["--max-bytes", str(int(cache_bytes))]  # the fetcher refuses a snapshot the volume cannot hold
    if model.allow_pickle:
        args.append("--allow-pickle")
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if settings.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    if model.token_secret_ref is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": model.token_secret_ref.name, "key": model.token_secret_ref.key}},
            }
        )
    return {
        "name": DOWNLOAD_CONTAINER,
        "image": settings.fetcher_image,
        "command": ["sdc-fetch-model"],
        "args": args,
        "env": env,
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
