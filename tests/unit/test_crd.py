"""The CRD is generated from the pydantic models; the committed copies must match."""

from __future__ import annotations

from typing import Any

from sdc_operator.crd import CRD_PATHS, crd, render


def walk(node: dict[str, Any], path: str = "") -> list[str]:
    missing = [] if "description" in node or path.endswith("metadata") or path == "" else [path]
    for name, child in (node.get("properties") or {}).items():
        missing += walk(child, f"{path}.{name}")
    if "items" in node:
        missing += walk(node["items"], f"{path}[]")
    return missing


def test_committed_crds_match_the_models() -> None:
    for path in CRD_PATHS:
        assert path.read_text() == render(), f"{path} is stale: run `make crds`"


def test_every_spec_field_is_described() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [p for p in walk(schema["properties"]["spec"], ".spec") if not p.endswith("[]")]
    assert undocumented == []


def test_contract_names() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "llm.sdc.dev"
    assert spec["names"]["plural"] == "localllms"
    assert spec["names"]["shortNames"] == ["llm"]
    assert spec["versions"][0]["subresources"] == {"status": {}}
    props = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["runtime"]["enum"] == ["vllm", "ollama", "transformers"]
    assert props["resources"]["properties"]["gpus"]["minimum"] == 0
