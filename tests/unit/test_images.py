"""`make images`' pure parts: chart tags, what a Dockerfile copies, the content key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from hack import images
from images.requirements import requirements

ROOT = Path(__file__).resolve().parents[2]


def test_tags_are_the_charts_defaults() -> None:
    values = yaml.safe_load((ROOT / "charts/sdc/values.yaml").read_text())
    app = yaml.safe_load((ROOT / "charts/sdc/Chart.yaml").read_text())["appVersion"]
    tags = images.chart_tags(ROOT / "charts" / "sdc")
    assert tags["operator"] == f"{values['operator']['image']['repository']}:{app}"
    assert tags["orchestrator"] == f"{values['orchestrator']['image']['repository']}:{app}"
    assert tags["runtime"] == values["operator"]["engineImages"]["runtime"]
    for key, reference in values["operator"]["engineImages"].items():  # empty: the operator's default
        engine = {"vllmCpu": "vllm-cpu"}.get(key, key)  # camelCase key -> Dockerfile stem
        assert tags[engine] == (reference or images.operator_default_image(engine))
        assert tags[engine], engine
    assert tags["vllm-cpu"] == "ghcr.io/sdc-llm/sdc-vllm-cpu:0.32.0"


def test_every_dockerfile_has_a_chart_tag_and_a_base_argument() -> None:
    tags = images.chart_tags(ROOT / "charts" / "sdc")
    for dockerfile in (ROOT / "images").glob("*.Dockerfile"):
        assert dockerfile.name.removesuffix(".Dockerfile") in tags, dockerfile.name
        text = dockerfile.read_text()
        assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text, dockerfile.name


@pytest.mark.parametrize(
    ("dockerfile", "sources"),
    [
        ("COPY a b ./\nRUN x\nADD c /c\n", ["a", "b", "c"]),
        ("COPY --from=build /opt /opt\nCOPY --chown=1:1 src ./src\n", ["src"]),
        ("COPY x \\\n  y /dst\n", ["x", "y"]),
        ("FROM scratch\n", []),
    ],
)
def test_copy_sources(dockerfile: str, sources: list[str]) -> None:
    assert images.copy_sources(dockerfile) == sources


def test_input_hash_follows_copied_files_only(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("one")
    (tmp_path / "other.txt").write_text("x")
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text("FROM ${BASE_IMAGE}\nCOPY src ./src\n")
    first = images.input_hash(dockerfile, tmp_path, "base1")
    (tmp_path / "other.txt").write_text("changed")
    assert images.input_hash(dockerfile, tmp_path, "base1") == first
    (tmp_path / "src" / "__pycache__").mkdir()
    (tmp_path / "src" / "__pycache__" / "a.pyc").write_text("bytecode")
    assert images.input_hash(dockerfile, tmp_path, "base1") == first
    assert images.input_hash(dockerfile, tmp_path, "base2") != first
    (tmp_path / "src" / "a.py").write_text("two")
    assert images.input_hash(dockerfile, tmp_path, "base1") != first


def test_image_requirements_are_the_base_plus_the_extra() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = requirements(pyproject, "runtime")
    assert any(r.startswith("torch") for r in runtime)
    assert any(r.startswith("accelerate") for r in runtime)
    assert any(r.startswith("pydantic") for r in runtime)
    assert not any(r.startswith("torch") for r in requirements(pyproject, "operator"))
    with pytest.raises(SystemExit, match="no extra"):
        requirements(pyproject, "nope")
    # The quantizing image (RUNTIME_EXTRA=runtime-quant): the runtime's requirements and bitsandbytes,
    # never the project itself (pip would look for it on an index).
    quant = requirements(pyproject, "runtime-quant")
    assert set(runtime) < set(quant) and any(r.startswith("bitsandbytes") for r in quant)
    assert not any(r.startswith("sdc-localllm") for r in quant)


@pytest.mark.parametrize(
    ("reference", "qualified"),
    [
        ("ollama/ollama:0.17.4", "docker.io/ollama/ollama:0.17.4"),
        ("busybox", "docker.io/library/busybox"),
        ("ghcr.io/sdc-llm/sdc-runtime:0.1.0", "ghcr.io/sdc-llm/sdc-runtime:0.1.0"),
        ("localhost/sdc-base:x", "localhost/sdc-base:x"),
        ("registry:5000/a/b:c", "registry:5000/a/b:c"),
    ],
)
def test_normalize_names_like_the_kubelet(reference: str, qualified: str) -> None:
    assert images.normalize(reference) == qualified


def test_a_load_needs_room_for_the_archive_and_for_the_layers_the_node_lacks() -> None:
    gib = 2**30
    layers = {"sha256:torch": 5 * gib, "sha256:code": gib // 2}
    assert images.room_needed(layers, set()) == (5 * gib + gib // 2) * 3 + gib
    assert images.room_needed(layers, {"sha256:torch"}) == (5 * gib + gib // 2) + 2 * (gib // 2) + gib
    assert images.room_needed({}, set()) == gib
