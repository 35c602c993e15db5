"""The operator's Ollama pod spec, run for real against the `ollama` binary (`make ollama`).

The LocalLLM imports a tiny GGUF from a URL served on this machine (how a
cluster without internet serves Ollama models), so the pod runs exactly what a
node would: the fetch init container, the Ollama init script, the serving
container as uid 1000 with HOME on the pod's emptyDir on loopback, its readiness
and liveness (exec) probes, and the exporter sidecar that owns the pod's API
port: every request goes through it, and its /metrics counts them. A second pod on the same cache then names the model by
tag only: its init container must find it cached instead of pulling (the pod's
network namespace has no way off the machine, so a pull would fail).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import deployment
from sdc_operator.settings import OLLAMA_VERSION, OperatorSettings
from sdc_operator.spec import LocalLLMSpec

from tests.support import tiny_gguf
from tests.support.local_pod import LocalPod

ROOT = Path(__file__).resolve().parents[2]
CACHED = Path(os.environ.get("SDC_TOOLS_CACHE", Path.home() / ".cache" / "sdc-llm"))
OLLAMA = next(
    (p for p in (ROOT / "bin" / "ollama", CACHED / "tools" / f"ollama-v{OLLAMA_VERSION}" / "ollama") if p.exists()),
    ROOT / "bin" / "ollama",
)
FILE_PORT = 8765  # inside the pod's own network namespace: nothing else listens there

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a local pod needs root (network namespace, setpriv)"),
    pytest.mark.skipif(not OLLAMA.exists(), reason="bin/ollama is missing: run `make ollama`"),
]


def pod_of(spec: dict[str, Any], name: str = "tiny") -> dict[str, Any]:
    llm = LocalLLM(name, "ns", "uid", 1, LocalLLMSpec.model_validate(spec))
    return dict(deployment(llm, OperatorSettings())["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The executables the pod's images would carry, readable by uid 1000."""
    bin_dir = tmp_path_factory.mktemp("images")
    shutil.copy(OLLAMA.resolve(), bin_dir / "ollama")
    # The fetcher image's console scripts, on the system Python (the standard library is all they need).
    for script, module in (("sdc-fetch-url", "fetch_url"), ("sdc-ollama-exporter", "ollama_exporter")):
        path = bin_dir / script
        path.write_text(
            f"#!{shutil.which('python3', path='/usr/bin:/bin') or sys.executable}\n"
            f"import sys\nsys.path.insert(0, {str(ROOT / 'runtime')!r})\n"
            f"from sdc_runtime.{module} import main\nmain()\n"
        )
        path.chmod(0o755)
    bin_dir.chmod(0o755)
    open_to_pod(bin_dir)
    return bin_dir


def open_to_pod(path: Path) -> None:
    """pytest's temporary directories are private to root: let the pod's user traverse to `path`."""
    for parent in [path, *path.parents]:
        if parent in (Path("/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o055)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    files = tmp_path_factory.mktemp("files")
    return files, tiny_gguf.write(files / "tiny.gguf")


def test_ollama_pod_serves_a_model_imported_from_a_url(
    model_file: tuple[Path, str], images: Path, tmp_path: Path
) -> None:
    files, sha = model_file
    pod = pod_of(
        {
            "runtime": "ollama",
            "model": {
                "name": "tiny:1",
                "url": f"http://127.0.0.1:{FILE_PORT}/tiny.gguf",
                "sha256": sha,
                "servedName": "team/tiny:v1",
                "parameters": {"num_thread": "1", "num_predict": "8"},
            },
        }
    )
    open_to_pod(tmp_path)
    cache, work = tmp_path / "cache", tmp_path / "pod"
    fetch, script = pod["initContainers"]
    local = LocalPod(pod, {"model-cache": cache, "tmp": work / "tmp"}, images)
    try:
        local.serve_files(files, FILE_PORT)
        fetched = local.run_init(fetch)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert json.loads(fetched.stdout.strip().splitlines()[-1])["event"] == "done"
        created = local.run_init(script)
        assert created.returncode == 0, created.stdout + created.stderr
        main, exporter = pod["containers"]
        local.start(main, work / "ollama.log")
        local.start(exporter, work / "exporter.log")
        local.wait_probe(main, "livenessProbe", timeout=30)
        local.wait_probe(main, "readinessProbe", timeout=30)
        local.wait_probe(exporter, "readinessProbe", timeout=30)
        status, version = local.http("GET", 11434, "/api/version")
        assert status == 200 and json.loads(version)["version"] == OLLAMA_VERSION
        status, shown = local.http("POST", 11434, "/api/show", {"model": "team/tiny:v1"})
        assert status == 200 and "num_thread" in json.loads(shown)["parameters"], shown
        status, chat = local.http(
            "POST",
            11434,
            "/api/chat",
            {"model": "team/tiny:v1", "messages": [{"role": "user", "content": "hello"}], "stream": False},
        )
        assert status == 200 and json.loads(chat)["done"] is True, chat
        status, completion = local.http(
            "POST",
            11434,
            "/v1/chat/completions",
            {"model": "team/tiny:v1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert status == 200 and json.loads(completion)["choices"][0]["message"]["role"] == "assistant", completion
        status, page = local.http("GET", 11434, "/metrics")
        counted = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if "{" in line}
        assert status == 200 and counted["vllm:request_success_total"] == 2, page
        assert counted["vllm:prefix_cache_queries_total"] > 0 and counted["vllm:num_requests_running"] == 0, page
        status, _ = local.http("GET", 11435, "/api/version")
        assert status == 200, "ollama itself listens on loopback, behind the exporter"
        assert (work / "tmp" / ".ollama").is_dir(), "ollama keeps its key under HOME, on the pod's emptyDir"
        assert (cache / "ollama" / "blobs" / f"sha256-{sha}").stat().st_uid == 1000
    finally:
        local.close()

    # A replacement pod on the same cache, the model named by its tag: found, not pulled.
    again = pod_of({"runtime": "ollama", "model": {"name": "team/tiny:v1", "parameters": {"num_thread": "1"}}})
    second = LocalPod(again, {"model-cache": cache, "tmp": tmp_path / "pod2"}, images)
    try:
        (script,) = again["initContainers"]
        result = second.run_init(script)
        assert result.returncode == 0 and "is in the cache" in result.stdout, result.stdout + result.stderr
        main = again["containers"][0]  # the engine alone: its readiness is its own
        second.start(main, tmp_path / "ollama2.log")
        second.wait_probe(main, "readinessProbe", timeout=30)
    finally:
        second.close()
