"""The operator's own guardrails: what a LocalLLM may ask for under this installation's settings.

The CRD's CEL rules refuse what is wrong everywhere (at admission, naming the
field). What depends on the installation (which images, taints, priority
classes, model sources and remote-code repositories an admin allows) cannot be
in a static CRD, so it is checked here before anything is built: a LocalLLM
that fails a check gets phase Failed with the reason, and no children.
"""

from __future__ import annotations

import fnmatch

from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def source_errors(spec: LocalLLMSpec, settings: OperatorSettings) -> list[str]:
    """The operator's allow-list of model sources."""
    allowed = settings.allowed_ollama_models if spec.runtime == "ollama" else settings.allowed_sources
    if _matches(spec.model.name, allowed):
        return []
    return [f"model.name: '{spec.model.name}' is not an allowed source (operator allow-list: {', '.join(allowed)})"]


def policy_errors(spec: LocalLLMSpec, settings: OperatorSettings) -> list[str]:
    """Every installation-specific refusal, each naming the field and the allow-list that refused it."""
    errors = source_errors(spec, settings)
    image = spec.engine.image
    defaults = {settings.vllm_image, settings.vllm_cpu_image, settings.ollama_image, settings.runtime_image}
    if image is not None and image not in defaults and not _matches(image, settings.allowed_images):
        errors.append(
            f"engine.image: '{image}' is not an allowed image (operator allow-list: "
            f"{', '.join(settings.allowed_images)})"
        )
    allowed_keys = [*settings.allowed_toleration_keys, settings.gpu_toleration_key]
    for toleration in spec.scheduling.tolerations:
        key = toleration.key or ""
        if not key and "*" not in allowed_keys:
            errors.append("scheduling.tolerations: a toleration without a key tolerates every taint; not allowed")
        elif key and not _matches(key, allowed_keys):
            errors.append(
                f"scheduling.tolerations: taint key '{key}' is not allowed (operator allow-list: "
                f"{', '.join(allowed_keys)})"
            )
    priority = spec.scheduling.priority_class_name
    if priority and priority not in settings.allowed_priority_classes:
        errors.append(
            f"scheduling.priorityClassName: '{priority}' is not allowed (operator allow-list: "
            f"{', '.join(settings.allowed_priority_classes) or 'empty'})"
        )
    if spec.model.trust_remote_code and not _matches(spec.model.name, settings.trust_remote_code_repos):
        errors.append(
            f"model.trustRemoteCode: '{spec.model.name}' is not in the operator's remote-code allow-list "
            f"({', '.join(settings.trust_remote_code_repos) or 'empty'})"
        )
    return errors


# -- references: the operator is nobody's deputy ------------------------------------------------------------
# Whoever may create a LocalLLM could otherwise have the operator's pods read any Secret of the namespace
# (env secretKeyRef, model.tokenSecretRef) or mount any claim (cache.existingClaim, model.source.claimName):
# in the release's namespace, the API keys, the Gemini key and the documents' volume. An object is usable
# only when its owner opted in with this label, or an admin named it in the operator's allow-list.
ALLOW_LABEL = "llm.sdc.dev/allow-localllm"

Reference = tuple[str, str, str]  # kind, name, the field that names it


def references(spec: LocalLLMSpec) -> list[Reference]:
    """Every Secret and PersistentVolumeClaim the spec makes the operator's pods use, with its field."""
    out: list[Reference] = []
    for i, var in enumerate(spec.engine.env):
        if var.secret_key_ref is not None:
            out.append(("Secret", var.secret_key_ref.name, f"engine.env[{i}].secretKeyRef"))
    if spec.model.token_secret_ref is not None:
        out.append(("Secret", spec.model.token_secret_ref.name, "model.tokenSecretRef"))
    if spec.cache.existing_claim:
        out.append(("PersistentVolumeClaim", spec.cache.existing_claim, "cache.existingClaim"))
    if spec.model.source is not None:
        out.append(("PersistentVolumeClaim", spec.model.source.claim_name, "model.source.claimName"))
    return out


def reference_errors(
    namespace: str,
    refs: list[Reference],
    labels_of: dict[tuple[str, str], dict[str, str] | None],
    settings: OperatorSettings,
) -> list[str]:
    """Refusals for the references an owner did not open to LocalLLMs; `labels_of[(kind, name)]` is the
    object's labels, None when there is no such object. Pure: the caller reads the metadata."""
    errors = []
    for kind, name, where in refs:
        allowed = settings.allowed_secrets if kind == "Secret" else settings.allowed_claims
        if _matches(f"{namespace}/{name}", allowed):
            continue
        labels = labels_of.get((kind, name))
        if labels is None:
            errors.append(f"{where}: {kind} '{name}' does not exist in namespace '{namespace}'")
        elif labels.get(ALLOW_LABEL) != "true":
            errors.append(
                f"{where}: {kind} '{name}' is not open to LocalLLMs: its owner must label it "
                f'{ALLOW_LABEL}="true" (or an admin list {namespace}/{name} in the operator\'s allow-list)'
            )
    return errors
