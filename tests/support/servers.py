"""Real HTTP servers on loopback for tests: any ASGI app under uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


@contextmanager
def runtime_process(model_dir: Path, served_name: str, timeout: float = 120) -> Iterator[str]:
    """`sdc-runtime` serving `model_dir` as its own process; yields its base URL once /health is ready."""
    import subprocess
    import sys

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sdc_runtime",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--served-model-name",
        served_name,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout and proc.poll() is not None else ""
                raise RuntimeError(f"sdc-runtime did not become healthy: {output[-2000:]}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
