"""`sdc-fetch-url` against a real HTTP server: the hash decides, a present file is never fetched again."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sdc_runtime.fetch_url import main


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "files"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--termination-log", str(tmp_path / "termination-log")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / "termination-log").read_text() == last
    return int(exited.value.code or 0), json.loads(last)


def test_fetches_checks_and_skips_when_present(
    files: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, root = files
    data = b"GGUF" + bytes(range(256)) * 5000
    (root / "m.gguf").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "cache" / "ollama" / "blobs" / f"sha256-{sha}"
    code, line = run(capsys, tmp_path, "--url", f"{base}/m.gguf", "--sha256", sha, "--dest", str(dest))
    assert code == 0 and line["event"] == "done" and line["cached"] is False, line
    assert dest.read_bytes() == data
    (root / "m.gguf").unlink()  # the server no longer has it: a second start must not need it
    code, line = run(capsys, tmp_path, "--url", f"{base}/m.gguf", "--sha256", sha, "--dest", str(dest))
    assert code == 0 and line["cached"] is True, line


@pytest.mark.parametrize(
    ("case", "name", "sha", "code", "fragment"),
    [
        ("wrong file", "m.gguf", "0" * 64, 2, "refusing the file"),
        ("missing file", "nothing.gguf", "0" * 64, 1, "404"),
        ("malformed hash", "m.gguf", "abc", 2, "64 lower-case hex"),
    ],
)
def test_refusals_leave_nothing_behind(
    files: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    name: str,
    sha: str,
    code: int,
    fragment: str,
) -> None:
    base, root = files
    (root / "m.gguf").write_bytes(b"not the model you pinned")
    dest = tmp_path / "cache" / "blob"
    got, line = run(capsys, tmp_path, "--url", f"{base}/{name}", "--sha256", sha, "--dest", str(dest))
    assert got == code and line["event"] == "error" and fragment in str(line["message"]), (case, line)
    assert not dest.exists()
    assert not list(dest.parent.glob(".*.partial"))
