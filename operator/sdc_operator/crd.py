"""Generate the LocalLLM CustomResourceDefinition from the pydantic models.

One source of truth: the CRD schema is derived from `spec.py`, never edited by
hand, and a test fails when `crds/localllm.yaml` or the chart's copy differ
from what this module generates (`make crds` rewrites both). Pydantic's JSON
schema is close to a structural OpenAPI schema; the differences handled here
are `$ref` inlining, `Optional` (anyOf with null) unwrapping, object defaults
(`{}` so nested defaults apply), and free-form objects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from sdc_operator import GROUP, KIND, PLURAL, VERSION, chart_schema
from sdc_operator.spec import AUTOSCALING_RULES, ROOT_RULES, SPEC_RULES, LocalLLMSpec, LocalLLMStatus

ROOT = Path(__file__).resolve().parents[2]
CRD_PATHS = (ROOT / "crds" / "localllm.yaml", ROOT / "charts" / "sdc" / "crds-source" / "localllm.yaml")
KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "x-kubernetes-validations",  # a model's own CEL rules (spec.Autoscaling)
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **outer}, defs)
        raise ValueError(f"union types cannot be expressed in a structural schema: {node}")
    out: dict[str, Any] = {k: v for k, v in node.items() if k in KEEP}
    if "const" in node:
        out["enum"] = [node["const"]]
    if out.get("default", 0) is None:
        del out["default"]
    if node.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties", {})
        if props:
            out["properties"] = {name: _structural(child, defs) for name, child in props.items()}
            for child in out["properties"].values():
                # `default: {}` on optional objects, so the API server applies their nested defaults.
                if child.get("type") == "object" and "properties" in child and not child.get("required"):
                    child.setdefault("default", {})
            required = node.get("required", [])
            if required:
                out["required"] = required
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif not props:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    return out


def openapi_schema(model: type[LocalLLMSpec] | type[LocalLLMStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


# The default columns fit a 100-character terminal for a typical row (a 12-character name, a 25-character
# model id); the long ones (the endpoint URL, the message) and the routing details are under `-o wide`.
PRINTER_COLUMNS = [
    {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpus"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Fits",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Fits")].status',
        "description": "Whether the model is estimated to fit the GPUs it asks for",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Weight", "type": "integer", "jsonPath": ".spec.routing.weight", "priority": 1},
    {"name": "Revision", "type": "string", "jsonPath": ".spec.model.revision", "priority": 1},
]


SCALE_SUBRESOURCE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def spec_schema() -> dict[str, Any]:
    schema = openapi_schema(LocalLLMSpec)
    schema["x-kubernetes-validations"] = [*SPEC_RULES, *AUTOSCALING_RULES]
    schema["description"] = "The desired served model."
    return schema


def status_schema() -> dict[str, Any]:
    """The status's schema: the conditions described and listed as a map by type (server-side apply merges them so)."""
    schema = openapi_schema(LocalLLMStatus)
    schema["description"] = "What the operator observed, derived from the owned objects."
    condition = schema["properties"]["conditions"]["items"]
    condition["description"] = "A standard Kubernetes condition."
    for name, text in {
        "type": "Condition type, e.g. Ready.",
        "status": "True, False or Unknown.",
        "reason": "One-word CamelCase reason.",
        "message": "Human-readable details.",
        "observedGeneration": "Generation the condition was computed for.",
        "lastTransitionTime": "When status last changed.",
    }.items():
        condition["properties"][name]["description"] = text
    schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["llm"],
                "categories": ["sdc", "ai"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    # /scale: `kubectl scale llm`, an HPA or KEDA, and the orchestrator's scale from zero
                    # write spec.replicas; status.replicas and status.selector are what they read back.
                    "subresources": {"status": {}, "scale": SCALE_SUBRESOURCE},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "LocalLLM is one model served in the cluster by vLLM, Ollama or Transformers, "
                            "with its model cache, its download and an OpenAI-compatible endpoint.",
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-validations": ROOT_RULES,
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version: llm.sdc.dev/v1alpha1."},
                                "kind": {"type": "string", "description": "Kind: LocalLLM."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated from operator/sdc_operator/spec.py by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the LocalLLM CRD")
    parser.add_argument(
        "--write", action="store_true", help="write crds/, the chart copy and the chart's models[].spec schema"
    )
    args = parser.parse_args()
    text = render()
    if not args.write:
        sys.stdout.write(text)
        return
    for path in CRD_PATHS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    chart_schema.SCHEMA_PATH.write_text(chart_schema.render(spec_schema()))  # models[].spec in the chart's values
    print(f"wrote {chart_schema.SCHEMA_PATH.relative_to(ROOT)} (models[].spec)")


if __name__ == "__main__":
    main()
