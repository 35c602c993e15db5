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


def test_hub_download_verifies_and_is_resumable_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real HTTP hub on loopback (no network): gated repo, token from a file, sha256 check, marker."""
    from tests.support.fake_hub import FakeHub
    from tests.support.servers import serve

    repo_dir = tmp_path / "hub" / "google" / "gemma-tiny"
    repo_dir.mkdir(parents=True)
    (repo_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (repo_dir / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (repo_dir / "pytorch_model.bin").write_bytes(b"pickle")
    (repo_dir / "tokenizer.json").write_text("{}")
    hub = FakeHub(tmp_path / "hub", REV, gated={"google/gemma-tiny": "hf_secret"})
    token = tmp_path / "token"
    token.write_text("hf_secret\n")
    with serve(hub.app) as endpoint:
        base = (
            "--repo",
            "google/gemma-tiny",
            "--revision",
            REV,
            "--cache",
            str(tmp_path / "cache"),
            "--allow",
            "google/*",
            "--endpoint",
            endpoint,
        )
        code, lines = fetch(tmp_path, *base)
        assert code == 1, "a gated repository without a token fails"
        assert "401" in str(lines[-1]["message"]) or "restricted" in str(lines[-1]["message"]).lower()
        code, lines = fetch(tmp_path, *base, "--token-file", str(token))
        assert code == 0, lines
        dest = cache_path(tmp_path / "cache", "google/gemma-tiny", REV)
        assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".cache")) == [
            MARKER,
            "config.json",
            "model.safetensors",
            "tokenizer.json",
        ]
        assert hub.downloads["pytorch_model.bin"] == 0, "pickled weights are not fetched by default"
        assert hub.downloads["model.safetensors"] == 1
        capsys.readouterr()
        code, _ = fetch(tmp_path, *base, "--token-file", str(token))
        assert code == 0
        assert hub.downloads["model.safetensors"] == 1, "the second fetch downloads nothing"
        # A corrupted cache file (a disk error, a killed copy) is fetched again, not trusted.
        (dest / MARKER).unlink()
        (dest / "model.safetensors").write_bytes(b"\0" * (256 * 40))
        code, lines = fetch(tmp_path, *base, "--token-file", str(token))
        assert code == 0, lines
        assert hub.downloads["model.safetensors"] == 2
        assert (dest / "model.safetensors").read_bytes() == bytes(range(256)) * 40


def hub_repo(tmp_path: Path) -> Path:
    repo_dir = tmp_path / "hub" / "google" / "gated-gate"
    (repo_dir / "tokenizer").mkdir(parents=True)
    (repo_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (repo_dir / "tokenizer.json").write_text('{"model": {}}')
    (repo_dir / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    # What a `tokenizer*` glob used to let through: code, a pickle, pickled weights in a subfolder.
    (repo_dir / "tokenizer_helper.py").write_text("import os; os.system('id')")
    (repo_dir / "tokenizer.pkl").write_bytes(b"\x80\x04pickle")
    (repo_dir / "tokenizer" / "pytorch_model.bin").write_bytes(b"pickle")
    (repo_dir / "README.md").write_text("# model card")
    return repo_dir


def hub_args(tmp_path: Path, endpoint: str, *extra: str) -> tuple[str, ...]:
    return (
        "--repo",
        "google/gated-gate",
        "--revision",
        REV,
        "--cache",
        str(tmp_path / "cache"),
        "--allow",
        "google/*",
        "--endpoint",
        endpoint,
        *extra,
    )


def test_gate_keeps_exact_names_and_safetensors_only(tmp_path: Path) -> None:
    from tests.support.fake_hub import FakeHub
    from tests.support.servers import serve

    hub_repo(tmp_path)
    hub = FakeHub(tmp_path / "hub", REV)
    with serve(hub.app) as endpoint:
        code, lines = fetch(tmp_path, *hub_args(tmp_path, endpoint))
    assert code == 0, lines
    dest = cache_path(tmp_path / "cache", "google/gated-gate", REV)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert kept == [MARKER, "config.json", "model.safetensors", "tokenizer.json"]
    refused = ("tokenizer_helper.py", "tokenizer.pkl", "tokenizer/pytorch_model.bin", "README.md")
    assert {name: hub.downloads[name] for name in refused} == dict.fromkeys(refused, 0)
    marker = json.loads((dest / MARKER).read_text())
    assert marker["revision"] == REV
    assert sorted(marker["files"]) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert all(len(entry["sha256"]) == 64 for entry in marker["files"].values())


def test_every_kept_file_is_verified_and_a_stale_marker_is_not_trusted(tmp_path: Path) -> None:
    from tests.support.fake_hub import FakeHub
    from tests.support.servers import serve

    hub_repo(tmp_path)
    hub = FakeHub(tmp_path / "hub", REV)
    dest = cache_path(tmp_path / "cache", "google/gated-gate", REV)
    with serve(hub.app) as endpoint:
        args = hub_args(tmp_path, endpoint)
        assert fetch(tmp_path, *args)[0] == 0
        assert hub.downloads["config.json"] == 1
        # A non-LFS file changed in place, same size: the marker's recorded sha256 catches it.
        original = (dest / "config.json").read_text()
        (dest / "config.json").write_text(original.replace("Llama", "Evil"))
        assert fetch(tmp_path, *args)[0] == 0
        assert hub.downloads["config.json"] == 2, "the tampered file is fetched again"
        assert (dest / "config.json").read_text() == original
        # A marker for another revision (or an older format) does not vouch: the cache is re-verified
        # against the listing (the git blob id for non-LFS files, sha256 for LFS ones).
        marker = json.loads((dest / MARKER).read_text())
        (dest / MARKER).write_text(json.dumps({**marker, "revision": "d" * 40}))
        (dest / "model.safetensors").write_bytes(b"\0" * (256 * 8))
        (dest / "tokenizer.json").write_text('{"model": []}')  # same size, other bytes
        assert fetch(tmp_path, *args)[0] == 0
        assert hub.downloads["model.safetensors"] == 2
        assert hub.downloads["tokenizer.json"] == 2
        assert json.loads((dest / MARKER).read_text())["revision"] == REV


def test_snapshot_larger_than_the_cache_is_refused(tmp_path: Path) -> None:
    from tests.support.fake_hub import FakeHub
    from tests.support.servers import serve

    hub_repo(tmp_path)
    hub = FakeHub(tmp_path / "hub", REV)
    with serve(hub.app) as endpoint:
        code, lines = fetch(tmp_path, *hub_args(tmp_path, endpoint, "--max-bytes", "1000"))
    assert code == 2
    assert "raise cache.size" in str(lines[-1]["message"]), lines
    assert hub.downloads["model.safetensors"] == 0, "refused before downloading"


SHARD = 24_000_000


def test_files_come_down_in_parallel_with_progress_while_bytes_arrive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three 24 MB shards from a hub that sends 8 MB/s per connection: all three at once, and progress
    lines with bytes, percent and an estimate while the shards are still arriving (not only per file: the
    hub client writes its partial files in 10 MiB steps, which these shards exceed)."""
    from tests.support.fake_hub import FakeHub
    from tests.support.servers import serve

    repo_dir = tmp_path / "hub" / "google" / "sharded"
    repo_dir.mkdir(parents=True)
    (repo_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    for shard in range(3):
        (repo_dir / f"model-0000{shard + 1}-of-00003.safetensors").write_bytes(bytes([shard]) * SHARD)
    hub = FakeHub(tmp_path / "hub", REV, bytes_per_second=8_000_000)
    args = ["--repo", "google/sharded", "--revision", REV, "--cache", str(tmp_path / "cache"), "--allow", "google/*"]
    with serve(hub.app) as endpoint:
        code, final = fetch(tmp_path, *args, "--endpoint", endpoint, "--progress-interval", "0.3")
    assert code == 0, final
    assert hub.max_active >= 3, "the three shards download at once"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [line for line in lines if line["event"] == "progress"]
    total = 3 * SHARD + len('{"architectures": ["LlamaForCausalLM"]}')
    assert {p["bytes_total"] for p in progress} == {total}
    done = [p["bytes_done"] for p in progress]
    assert done == sorted(done), "bytes done never go back"
    midway = [p for p in progress if 0 < p["bytes_done"] < total]
    assert midway, f"no progress line while the shards were arriving: {done}"
    whole_files = {config + k * SHARD for config in (0, total - 3 * SHARD) for k in range(4)}
    assert any(p["bytes_done"] not in whole_files for p in midway), "partial files count before they are whole"
    estimated = [p for p in midway if "eta_seconds" in p]
    assert estimated, "an estimate once a first MiB has arrived"
    assert all(p["eta_seconds"] >= 0 and p["bytes_per_second"] > 0 and 0 < p["percent"] < 100 for p in estimated)
    assert progress[-1]["percent"] == 100 and progress[-1]["files_done"] == 4


def test_parallel_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--repo", "a/b", "--revision", REV, "--cache", str(tmp_path), "--parallel", "1000"])
    assert exit_info.value.code == 2
