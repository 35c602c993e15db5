"""The chart as other tools meet it: as a subchart, through kustomize-strict YAML, skaffold, a values typo, helm test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from sdc_operator import chart_schema
from sdc_operator.crd import spec_schema

from tests.chart.test_chart_render import CHART, ROOT, helm, kinds, orchestrator_of, render


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; kustomize and strict clients refuse them."""


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise AssertionError(f"key {key!r} twice at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


SCENARIOS = [
    [],
    ["operator.replicas=2", "metrics.serviceMonitor.enabled=true", "metrics.grafanaDashboard.enabled=true"],
    ["operator.watchNamespaces={team-a}", "routing.namespaces={team-a}", "metrics.podMonitor.enabled=true"],
    ["metrics.dcgm.enabled=true", "orchestrator.persistence.enabled=false"],
]


@pytest.mark.parametrize("sets", SCENARIOS, ids=lambda s: ",".join(s) or "defaults")
def test_every_manifest_has_each_key_once(sets: list[str]) -> None:
    args = ["template", "sdc", str(CHART), "-n", "sdc"]
    for s in sets:
        args += ["--set", s]
    docs = [d for d in yaml.load_all(helm(*args).stdout, Loader=StrictLoader) if d]
    assert docs
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "sdc", doc["metadata"]["name"]


def test_works_as_a_subchart(tmp_path: Path) -> None:
    """A parent with `condition: sdc.enabled` and globals of its own: both reach this chart's values."""
    parent = tmp_path / "platform"
    shutil.copytree(CHART, parent / "charts" / "sdc")
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [{"name": "sdc", "version": "0.1.0", "condition": "sdc.enabled"}],
            }
        )
    )
    (parent / "values.yaml").write_text(
        yaml.safe_dump(
            {"global": {"imageRegistry": "mirror.local", "imagePullSecrets": ["pull"]}, "sdc": {"enabled": True}}
        )
    )
    docs = [d for d in yaml.safe_load_all(helm("template", "p", str(parent), "-n", "platform").stdout) if d]
    orchestrator = next(d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("-orchestrator"))
    assert orchestrator["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    off = helm("template", "p", str(parent), "-n", "platform", "--set", "sdc.enabled=false").stdout
    assert "kind: Deployment" not in off


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["models[0].spec.runtme=ollama"], "runtme"),
        (["models[0].spec.resources.gpu=1"], "gpu"),
        (["models[0].spec.runtime=llamacpp"], "runtime"),
        (["models[0].spec.model.revison=abc"], "revison"),
    ],
)
def test_model_spec_typos_fail_at_template(sets: list[str], fragment: str) -> None:
    """Checked against the CRD's own schema before anything is applied (the API server would prune it silently)."""
    args = ["template", "sdc", str(CHART), "--set", "models[0].name=m"]
    if not any(s.startswith("models[0].spec.runtime=") for s in sets):
        args += ["--set", "models[0].spec.runtime=ollama"]
    args += ["--set", "models[0].spec.model.name=gemma2:9b"]
    for s in sets:
        args += ["--set", s]
    result = helm(*args, check=False)
    assert result.returncode != 0 and fragment in result.stderr, result.stderr
    assert "CRD is not installed" not in result.stderr, "the schema speaks first"


def test_model_spec_schema_is_the_crds() -> None:
    assert (CHART / "values.schema.json").read_text() == chart_schema.render(spec_schema()), (
        "run `python -m sdc_operator.crd --write`"
    )


def _leaves(node: Any, path: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return {leaf for key, child in node.items() for leaf in _leaves(child, f"{path}.{key}" if path else key)}
    return {path}


def _schema_leaves(node: dict[str, Any], path: str = "") -> set[str]:
    props = node.get("properties")
    if not props or node.get("additionalProperties") not in (False, None):
        return {path}
    return {leaf for key, child in props.items() for leaf in _schema_leaves(child, f"{path}.{key}" if path else key)}


def test_values_and_schema_agree() -> None:
    """Every value in values.yaml is in the schema (lint checks that) and every schema value has a default and a
    comment in values.yaml, so values.yaml stays the one place that documents them."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = _leaves(values)
    for leaf in _schema_leaves(schema):
        if leaf.startswith(("models", "global")) or leaf == "enabled":
            continue  # the CRD's spec (generated), the parent's globals, the parent's condition
        assert any(d == leaf or d.startswith(leaf + ".") for d in documented), f"{leaf}: no default in values.yaml"
    text = (CHART / "values.yaml").read_text()
    for top in ("operator", "orchestrator", "routing", "networkPolicy", "metrics", "crds"):
        assert f"# {top} -- " in text


def _skaffold_sets(release: dict[str, Any]) -> list[str]:
    stand_in = {"IMAGE_REPO_": "registry.local/img", "IMAGE_TAG_": "dev", "IMAGE_DIGEST_": "sha256:" + "0" * 64}
    out = []
    for key, template in release.get("setValueTemplates", {}).items():
        value = str(template)
        for prefix, stand in stand_in.items():
            while "{{." + prefix in value:
                start = value.index("{{." + prefix)
                value = value[:start] + stand + value[value.index("}}", start) + 2 :]
        value = value.replace("{{.IMAGE_FULLY_QUALIFIED_ghcr_io_sdc_llm_sdc_runtime}}", "registry.local/runtime:dev")
        out.append(f"{key}={value}")
    out += [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in release.get("setValues", {}).items()]
    return out


def _apply_patch(config: dict[str, Any], patch: dict[str, Any]) -> None:
    *parents, last = [p for p in patch["path"].split("/") if p]
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    assert patch["op"] in ("add", "replace"), patch
    node[last] = patch["value"]


@pytest.mark.parametrize("profile", [None, "kind", "gpu"])
def test_skaffold_profiles_render(profile: str | None) -> None:
    """What `skaffold run -p PROFILE` hands Helm renders (the gpu profile once asked for two orchestrators)."""
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    if profile:
        [chosen] = [p for p in config["profiles"] if p["name"] == profile]
        for patch in chosen.get("patches", []):
            _apply_patch(config, patch)
    [release] = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    docs = render(*_skaffold_sets(release))
    assert orchestrator_of(docs)["spec"]["replicas"] == 1


def test_documents_persist_by_default() -> None:
    docs = render()
    [claim] = kinds(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    orchestrator = orchestrator_of(docs)
    volumes = {v["name"]: v for v in orchestrator["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert orchestrator["spec"]["strategy"] == {"type": "Recreate"}, "one writer of the store at a time"
    env = {e["name"]: e.get("value") for e in orchestrator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SDC_DATA_DIR"] == "/var/lib/sdc"  # documents, and feedback.jsonl beside them
    ephemeral = orchestrator_of(render("orchestrator.persistence.enabled=false"))
    assert "strategy" not in ephemeral["spec"]
    assert {v["name"]: v for v in ephemeral["spec"]["template"]["spec"]["volumes"]}["data"] == {
        "name": "data",
        "emptyDir": {},
    }


def test_helm_test_checks_the_release_with_its_key() -> None:
    docs = render()
    [check] = [d for d in kinds(docs, "Pod") if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    container = check["spec"]["containers"][0]
    assert container["image"] == container_image(docs)
    assert container["command"] == [
        "python",
        "-m",
        "sdc_orchestrator.selfcheck",
        "--url",
        "http://sdc-orchestrator:8080",
        "--keys-file",
        "/etc/sdc/keys/keys",
    ]
    assert check["spec"]["volumes"] == [{"name": "api-keys", "secret": {"secretName": "sdc-api-keys"}}]
    assert check["spec"]["restartPolicy"] == "Never" and check["spec"]["automountServiceAccountToken"] is False
    assert not kinds(render("orchestrator.enabled=false"), "Pod")


def container_image(docs: list[dict[str, Any]]) -> str:
    return str(orchestrator_of(docs)["spec"]["template"]["spec"]["containers"][0]["image"])
