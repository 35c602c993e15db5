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
def serve(app: Any, startup_timeout: float = 120) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port; yields its base URL once it listens.

    A port picked by free_port() can be taken by another process before uvicorn binds it (many test
    processes share this machine), so a server thread that dies before starting is retried on a new port.
    """
    for _attempt in range(3):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + startup_timeout
        while not server.started and thread.is_alive():
            if time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(f"server did not start within {startup_timeout:.0f} s")
            time.sleep(0.02)
        if server.started:
            break
    else:
        raise RuntimeError("server exited before it started, three times (see the log above)")
    try:
        yield f"http://127.0.0.1:{port}"
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
