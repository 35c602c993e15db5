"""The real `ollama serve` with the tiny GGUF, and `sdc-ollama-exporter` in front of it, as local processes."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sdc_operator.settings import OLLAMA_VERSION

from tests.support import tiny_gguf

ROOT = Path(__file__).resolve().parents[2]
_CACHED = Path(os.environ.get("SDC_TOOLS_CACHE", Path.home() / ".cache" / "sdc-llm"))
# `make ollama` links bin/ollama; the tool cache has the same binary when only the build ran.
OLLAMA = next(
    (p for p in (ROOT / "bin" / "ollama", _CACHED / "tools" / f"ollama-v{OLLAMA_VERSION}" / "ollama") if p.exists()),
    ROOT / "bin" / "ollama",
)
CONTEXT = 8192  # room for a long answer: a request that must stay in flight a while generates thousands of tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered on {port}{path}")
        time.sleep(0.1)


@dataclass
class Ollama:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


@contextmanager
def ollama(work: Path, model: str = "tiny", parallel: int = 1) -> Iterator[Ollama]:
    """`ollama serve` on a free loopback port with `model` created from the tiny GGUF (debug log on: its runner
    logs how much of each prompt it reused)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "OLLAMA_MODELS": str(work / "models"),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_NUM_PARALLEL": str(parallel),
        "OLLAMA_DEBUG": "1",
        "OLLAMA_KEEP_ALIVE": "10m",
        "OLLAMA_CONTEXT_LENGTH": str(CONTEXT),
    }
    log = work / "ollama.log"
    with log.open("wb") as out:
        server = subprocess.Popen([str(OLLAMA), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(port, "/api/version")
        tiny_gguf.write(work / "tiny.gguf", context=CONTEXT)
        (work / "Modelfile").write_text(f"FROM {work / 'tiny.gguf'}\nPARAMETER num_thread 1\nPARAMETER num_predict 8\n")
        created = subprocess.run(
            [str(OLLAMA), "create", model, "-f", str(work / "Modelfile")], env=env, capture_output=True, timeout=120
        )
        assert created.returncode == 0, created.stderr
        yield Ollama(server, port, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def exporter(upstream: int, parallel: int = 1) -> Iterator[int]:
    """`sdc-ollama-exporter` (as its console script runs it) in front of `upstream`; yields its port."""
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}", "--context", str(CONTEXT)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdc_runtime.ollama_exporter", *args],
        env={**os.environ, "OLLAMA_NUM_PARALLEL": str(parallel), "PYTHONPATH": str(ROOT / "runtime")},
    )
    try:
        wait_http(port, "/metrics")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
