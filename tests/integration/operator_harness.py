"""Run `sdc-operator` as a real process against the test cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from sdc_operator import kube

from tests.conftest import ROOT, SIMULATED_NODE_SELECTOR, SIMULATED_TOLERATION, Kubectl, wait_until
from tests.support.servers import free_port

T = TypeVar("T")


def run_kube(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that calls the API client on a loop of its own, closing the client's session after."""

    async def once() -> T:
        try:
            return await coro
        finally:
            await kube.close()

    return asyncio.run(once())


GROUP_VERSION = "llm.sdc.dev/v1alpha1"
REVISION = "0123456789abcdef0123456789abcdef01234567"


class OperatorProcess:
    def __init__(self, kubeconfig: Path, endpoints_namespace: str, log_path: Path, **env: str) -> None:
        self.extra_env = env
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.kubeconfig = kubeconfig
        self.endpoints_namespace = endpoints_namespace
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SDC_STANDALONE": "true",
            "SDC_METRICS_PORT": str(self.metrics_port),
            "SDC_HEALTH_PORT": str(self.health_port),
            "SDC_ENDPOINTS_NAMESPACE": self.endpoints_namespace,
            "SDC_LOG_FORMAT": "plain",
            "SDC_ALLOWED_SOURCES": '["*/*"]',
            "SDC_TRUST_REMOTE_CODE_REPOS": '["LGAI-EXAONE/*"]',  # the EXAONE example manifest's code
            # Simulated CPU pods tolerate the KWOK CPU node's taint; an admin allows it the same way.
            "SDC_ALLOWED_TOLERATION_KEYS": f'["nvidia.com/gpu", "{SIMULATED_TOLERATION["key"]}"]',
            **self.extra_env,
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdc_operator"], env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def running_operator(
    kubectl: Kubectl, kubeconfig: Path, log_dir: Path, endpoints_ns: str, **env: str
) -> Iterator[OperatorProcess]:
    """The CRD established, the endpoints namespace made, one operator process (`env`: its extra settings);
    its log tail printed at the end.

    A generator for module-scoped fixtures: `yield from running_operator(...)`."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "localllm.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    kubectl("create", "namespace", endpoints_ns, check=False)
    proc = OperatorProcess(kubeconfig, endpoints_ns, log_dir / "operator.log", **env)
    proc.start()
    yield proc
    proc.stop()
    print("\n--- operator log tail ---\n" + proc.tail())


def tiny(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A LocalLLM of the tiny Transformers model on a simulated CPU node; `model` entries are merged in."""
    model = spec.pop("model", {})
    body = localllm(name, namespace, runtime="transformers", model="sdc/tiny", gpus=0, **spec)
    body["spec"]["model"].update(model)
    return body


def localllm(
    name: str, namespace: str, *, runtime: str = "vllm", model: str = "google/gemma-2-9b-it", gpus: int = 1, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": runtime, "model": {"name": model}, "resources": {"gpus": gpus}}
    if runtime != "ollama":
        body["model"]["revision"] = REVISION
    if gpus == 0 and "scheduling" not in spec:  # KWOK plays the engine: see tests.conftest.simulated
        body["scheduling"] = {"nodeSelector": SIMULATED_NODE_SELECTOR, "tolerations": [SIMULATED_TOLERATION]}
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def phase(kubectl: Kubectl, name: str, namespace: str) -> str:
    obj = kubectl.get("llm", name, "-n", namespace)
    return str(obj.get("status", {}).get("phase", ""))


def wait_phase(kubectl: Kubectl, name: str, namespace: str, want: str, timeout: float = 90) -> dict[str, Any]:
    return wait_until(
        f"{name} to be {want}",
        lambda: (o := kubectl.get("llm", name, "-n", namespace)).get("status", {}).get("phase") == want and o,
        timeout=timeout,
    )
