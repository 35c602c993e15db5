"""The chart's `models[].spec` schema, generated from the CRD's own (one source: `spec.py`).

`helm template` checks values against `charts/sdc/values.schema.json` before anything reaches the API
server; with this, a typo under `models[].spec` (`runtme`, `resources.gpu`) fails there, naming the
field, instead of being pruned by the API server without a word. The CRD's schema is structural, so it
prunes unknown fields rather than refusing them: here every object with declared properties gets
`additionalProperties: false`, which is what a values file wants. Kubernetes-only keywords (CEL rules,
int-or-string, list types) and defaults are dropped: Helm's validator neither needs nor knows them.
The rest of values.schema.json is kept by hand next to values.yaml (a test checks they agree);
`python -m sdc_operator.crd --write` rewrites this part with the CRDs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "charts" / "sdc" / "values.schema.json"
SUBTREES = ("properties", "items", "additionalProperties")


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema for values from a structural OpenAPI schema: unknown fields refused where fields are declared."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "default" and k not in SUBTREES}
    if "properties" in node:
        out["properties"] = {name: strict(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = strict(node["items"])
    return out


def values_schema(spec_schema: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """`current` (the chart's schema) with `models[].spec` replaced by the CRD's spec schema, made strict."""
    spec = strict(spec_schema)
    spec["description"] = "A LocalLLM spec, checked against the CRD's schema (unknown fields refused)."
    out: dict[str, Any] = json.loads(json.dumps(current))  # a deep copy
    out["properties"]["models"]["items"]["properties"]["spec"] = spec
    return out


def render(spec_schema: dict[str, Any]) -> str:
    current = json.loads(SCHEMA_PATH.read_text())
    return json.dumps(values_schema(spec_schema, current), indent=2, ensure_ascii=False) + "\n"
