"""sdc-fetch-model without a network: refusals, a local source, verification and the once-per-cache marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdc_runtime.fetch import MARKER, cache_path, main

REV = "c" * 40


def fetch(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    term = tmp_path / "termination-log"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--termination-log", str(term)])
    return int(exit_info.value.code or 0), [json.loads(term.read_text())]


def source_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"\0" * 1000)
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    (src / "modeling_evil.py").write_text("import os")
    return src


def test_refuses_sources_outside_the_allow_list(tmp_path: Path) -> None:
    code, lines = fetch(
        tmp_path, "--repo", "evil/model", "--revision", REV, "--cache", str(tmp_path), "--allow", "google/*"
    )
    assert code == 2
    assert "not in the allow-list" in str(lines[-1]["message"])


def test_refuses_unpinned_revisions(tmp_path: Path) -> None:
    code, lines = fetch(
        tmp_path, "--repo", "google/x", "--revision", "main", "--cache", str(tmp_path), "--allow", "google/*"
    )
    assert code == 2
    assert "pinned" in str(lines[-1]["message"])


def test_local_source_is_safetensors_only_and_fetched_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = source_dir(tmp_path)
    args = (
        "--repo",
        "google/x",
        "--revision",
        REV,
        "--cache",
        str(tmp_path / "cache"),
        "--allow",
        "google/*",
        "--source",
        str(src),
    )
    code, lines = fetch(tmp_path, *args)
    assert code == 0, lines
    dest = cache_path(tmp_path / "cache", "google/x", REV)
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "config.json", "model.safetensors"]
    progress = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["event"] for p in progress] == ["start", "progress", "progress", "done"]
    assert progress[-2]["percent"] == 100
    code, _ = fetch(tmp_path, *args)
    assert code == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["event"] == "cached"
