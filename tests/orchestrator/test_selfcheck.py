"""The chart's `helm test` check (sdc_orchestrator.selfcheck), run here against a real orchestrator."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path


def selfcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdc_orchestrator.selfcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_release_with_no_model_passes_and_says_so(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    """As on a fresh `helm install`: the chart's keys file (a hashed line first is skipped), no model."""
    keys = tmp_path / "keys"
    keys.write_text("# the chart's format\nops:sha256:" + "0" * 64 + "\nadmin:sk-sdc-test\n")
    base = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_api_keys_file=keys)
    done = selfcheck("--url", base, "--keys-file", str(keys))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok    GET /readyz: HTTP 200; chat: no model yet (no model yet: no Ready LocalLLM")
    assert lines[1:] == [
        "ok    GET /v1/models without a key: HTTP 401 (the gateway must refuse it)",
        "ok    GET /v1/models: HTTP 200; models: auto",
        "ok    GET /api/v1/status: chat: no model yet; endpoints: none",
        "passed",
    ]


def test_a_wrong_key_or_no_server_fails(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("admin:sk-sdc-right\n")
    base = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_api_keys_file=keys)
    wrong = selfcheck("--url", base, "--key", "sk-sdc-wrong")
    assert wrong.returncode == 1 and "FAIL  GET /v1/models: HTTP 401" in wrong.stdout, wrong.stdout
    gone = selfcheck("--url", "http://127.0.0.1:9", "--key", "k", "--wait-s", "1")
    assert gone.returncode == 1 and "does not answer" in gone.stdout
    assert gone.stdout.startswith("wait  http://127.0.0.1:9/readyz"), gone.stdout


def test_a_service_that_answers_late_is_waited_for(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    """As right after `helm install --wait`: the pod is Ready but its Service refuses connections for a moment."""
    keys = tmp_path / "keys"
    keys.write_text("admin:sk-sdc-late\n")
    base = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_api_keys_file=keys)
    target = urllib.parse.urlsplit(base)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now; nothing listens there until the forwarder starts
    check = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdc_orchestrator.selfcheck",
            "--url",
            f"http://127.0.0.1:{port}",
            "--key",
            "sk-sdc-late",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    with _forwarder(port, (str(target.hostname), int(target.port or 80))):
        out, _ = check.communicate(timeout=60)
    assert check.returncode == 0, out
    assert out.startswith("wait  ") and "ok    GET /readyz: HTTP 200" in out and out.rstrip().endswith("passed"), out


@contextlib.contextmanager
def _forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    """A TCP forwarder from 127.0.0.1:port to `target`, standing in for a Service whose rules arrive late."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(target) as upstream:
                back = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
                back.start()
                pipe(self.request, upstream)
                back.join(timeout=30)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
