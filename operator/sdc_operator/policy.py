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
