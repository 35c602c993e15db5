"""Names, labels, hashes and pod pieces shared by every runtime."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sdc_operator import GROUP, KIND, VERSION
from sdc_operator.spec import LocalLLMSpec

MODEL_MOUNT = "/models"
APP_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_LABEL = f"{GROUP}/localllm"
SPEC_HASH = f"{GROUP}/spec-hash"
MODEL_HASH = f"{GROUP}/model-hash"
NONROOT_UID = 1000


@dataclass(frozen=True)
class LocalLLM:
    """The parts of a LocalLLM object the builders need, already validated."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: LocalLLMSpec

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LocalLLM:
        meta = body["metadata"]
        return cls(
            meta["name"],
            meta["namespace"],
            meta.get("uid", ""),
            int(meta.get("generation", 1)),
            LocalLLMSpec.model_validate(body.get("spec", {})),
        )


def resource_name(llm: LocalLLM) -> str:
    """Children share the LocalLLM's name: `kubectl get deploy,svc,pvc NAME` finds them all."""
    return llm.name


def cache_claim_name(llm: LocalLLM) -> str:
    """The claim mounted at /models: the model's own volume (model.source), an existing cache, or ours."""
    if llm.spec.model.source is not None:
        return llm.spec.model.source.claim_name
    return llm.spec.cache.existing_claim or f"{llm.name}-model-cache"


def labels(llm: LocalLLM) -> dict[str, str]:
    return {APP_LABEL: "localllm", INSTANCE_LABEL: llm.name, MANAGED_BY: "sdc-operator", OWNER_LABEL: llm.name}


def selector(llm: LocalLLM) -> dict[str, str]:
    return {OWNER_LABEL: llm.name}


def owner_reference(llm: LocalLLM) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": llm.name,
        "uid": llm.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(llm: LocalLLM, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": llm.namespace, "labels": labels(llm)}
    if owned:
        meta["ownerReferences"] = [owner_reference(llm)]
    return meta


def stable_hash(value: Any) -> str:
    """A short hash of JSON-able data: a cheap drift check stored as an annotation."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def model_identity(spec: LocalLLMSpec) -> dict[str, Any]:
    """What decides the cached bytes: a change here means a new download."""
    m = spec.model
    return {
        "runtime": spec.runtime,
        "name": m.name,
        "revision": m.revision,
        "pickle": m.allow_pickle,
        "code": m.trust_remote_code,
        **({"source": m.source.model_dump()} if m.source else {}),
    }


def hf_model_dir(spec: LocalLLMSpec) -> str:
    """Where sdc-fetch-model puts a snapshot (see sdc_runtime.fetch.cache_path), or the volume's model."""
    if spec.model.source is not None:
        return f"{MODEL_MOUNT}/{spec.model.source.path}"
    return f"{MODEL_MOUNT}/hf/{spec.model.name}/{spec.model.revision}"


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env_list(spec: LocalLLMSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for var in spec.engine.env:
        if var.secret_key_ref is not None:
            out.append(
                {
                    "name": var.name,
                    "valueFrom": {"secretKeyRef": {"name": var.secret_key_ref.name, "key": var.secret_key_ref.key}},
                }
            )
        else:
            out.append({"name": var.name, "value": var.value or ""})
    return out


STARTUP_PERIOD_S = 2


def http_probe(path: str, port: int, *, period: int, failures: int, initial: int = 0) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "initialDelaySeconds": initial,
        "timeoutSeconds": 5,
    }


def openai_server_container(
    name: str,
    image: str,
    args: list[str],
    spec: LocalLLMSpec,
    resources: dict[str, Any],
    *,
    port: int,
    startup_failures: int,
    command: list[str] | None = None,
    extra_env: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The serving container of an engine that reads the cached snapshot and answers /health."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "args": args,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
            *(extra_env or []),
            *env_list(spec),
        ],
        "resources": resources,
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_MOUNT, "readOnly": True},
            *(extra_mounts or []),
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # Loading weights can take many minutes: only the startup probe runs until it is done
        # (`startup_failures` counts 10 s periods: the same budget at a shorter period). Short periods
        # because a pod's Ready waits for the startup probe's next run and then the readiness probe's: at
        # 10 s and 5 s that was up to 15 s of a scale from zero (#24) spent after the engine could serve;
        # /health is cheap. The readiness probe still needs 16 s of failures to take a busy pod out.
        "startupProbe": http_probe(
            "/health", port, period=STARTUP_PERIOD_S, failures=startup_failures * 10 // STARTUP_PERIOD_S
        ),
        "readinessProbe": http_probe("/health", port, period=2, failures=8),
        "livenessProbe": http_probe("/health", port, period=15, failures=4),
        "securityContext": container_security(),
        # The log's tail becomes the termination message: a CUDA out-of-memory reaches the status (status.py).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if command:
        container["command"] = command
    return container


def served_args(spec: LocalLLMSpec, port: int) -> list[str]:
    """sdc-runtime's arguments: the snapshot, the served name, where to listen."""
    return [
        "--model",
        hf_model_dir(spec),
        "--served-model-name",
        spec.served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
