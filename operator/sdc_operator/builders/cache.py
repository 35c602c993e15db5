"""The model-cache PersistentVolumeClaim.

With `deletePolicy: Retain` the claim carries no owner reference, so garbage
collection leaves it (and the downloaded weights) behind when the LocalLLM goes;
an `existingClaim` is the user's and is never built here.
"""

from __future__ import annotations

from typing import Any

from sdc_operator.builders.common import LocalLLM, cache_claim_name, metadata


def cache_claim(llm: LocalLLM) -> dict[str, Any] | None:
    cache = llm.spec.cache
    if cache.existing_claim or llm.spec.model.source is not None:  # the user's volume, never built here
        return None
    spec: dict[str, Any] = {"accessModes": [cache.access_mode], "resources": {"requests": {"storage": cache.size}}}
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(llm, cache_claim_name(llm), owned=cache.delete_policy == "Delete"),
        "spec": spec,
    }
