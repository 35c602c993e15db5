#!/usr/bin/env python3
"""`make demo`: the whole stack working on this machine, in a few minutes, with no GPU.

1. the local Kubernetes control plane (real API server, scheduler, controllers; KWOK nodes)
2. `helm install` of the chart
3. the operator, running here with the chart's ServiceAccount (KWOK simulates its pod)
4. a LocalLLM from manifests/ going Pending -> Ready with its endpoint
5. two real model servers (sdc-runtime): the primary, and a stand-in for Gemini's endpoint
6. the orchestrator answering a Korean question with retrieved sources
7. the primary stopped: the same question answered by the fallback

Everything it starts is stopped at the end (SDC_DEMO_KEEP=1 keeps it running).
A random tiny model is made on the spot unless SDC_DEMO_MODEL_DIR names a real
model directory; a random model's words are noise, the plumbing is the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hack.cluster import free_port, serviceaccount_kubeconfig  # noqa: E402

BIN = ROOT / "bin"
STATE = ROOT / ".cluster"
KUBECONFIG = STATE / "kubeconfig"
WORK = STATE / "demo"
PY = sys.executable
NAMESPACE = os.environ.get("SDC_DEMO_NAMESPACE", "sdc-demo")
RELEASE = os.environ.get("SDC_DEMO_RELEASE", "sdc")
# The chart's sdc.fullname: the release name, with "-sdc" unless it already says sdc.
FULLNAME = (RELEASE if "sdc" in RELEASE else f"{RELEASE}-sdc")[:50].rstrip("-")
MANIFEST = ROOT / "manifests" / "ollama-gemma2-9b.yaml"
DOCUMENTS: list[dict[str, Any]] = [
    {
        "id": "seoul",
        "text": "서울은 대한민국의 수도이며 가장 큰 도시입니다. 한강이 도시를 가로질러 흐릅니다.",
        "metadata": {"title": "서울"},
    },
    {
        "id": "busan",
        "text": "부산은 대한민국 제2의 도시로, 대표적인 항구 도시입니다. 해운대 해수욕장이 유명합니다.",
        "metadata": {"title": "부산"},
    },
    {
        "id": "gpu",
        "text": "쿠버네티스에서 GPU 노드에 언어 모델을 배포하려면 nvidia.com/gpu 자원을 요청해야 합니다.",
        "metadata": {"title": "GPU"},
    },
]
QUESTION = "해운대가 있는 항구 도시는 어디인가요?"


class DemoError(Exception):
    pass


processes: list[subprocess.Popen[bytes]] = []
step_number = 0


def step(title: str) -> None:
    global step_number
    step_number += 1
    print(f"\n\033[1m[{step_number}/7] {title}\033[0m", flush=True)


def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise DemoError(f"{' '.join(argv[:4])} ... failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return run(str(BIN / "kubectl"), f"--kubeconfig={KUBECONFIG}", *args, stdin=stdin, check=check)


def helm(*args: str) -> str:
    return run(str(BIN / "helm"), f"--kubeconfig={KUBECONFIG}", *args)


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    WORK.mkdir(parents=True, exist_ok=True)
    log = open(WORK / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    processes.append(proc)
    return proc


def wait(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise DemoError(f"{what}: the process exited ({proc.returncode}); see {WORK}")
        time.sleep(0.5)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_json(method: str, url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    import httpx

    try:
        resp = httpx.request(method, url, json=body, timeout=timeout)
    except httpx.HTTPError:
        return 0, None
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


def up(url: str) -> bool:
    return http_json("GET", url, timeout=2)[0] == 200


def sa_kubeconfig(account: str) -> Path:
    token = kubectl("create", "token", account, "-n", NAMESPACE, "--duration=2h").strip()
    admin = json.loads(KUBECONFIG.read_text())
    path = WORK / "operator.kubeconfig"
    path.write_text(json.dumps(serviceaccount_kubeconfig(admin["clusters"][0]["cluster"], token)))
    path.chmod(0o600)
    return path


def model_server(name: str, model_dir: Path, served: str) -> str:
    port = free_port()
    proc = spawn(
        name, [PY, "-m", "sdc_runtime", "--model", str(model_dir), "--port", str(port), "--served-model-name", served]
    )
    base = f"http://127.0.0.1:{port}"
    wait(f"{name} to load its model", lambda: up(f"{base}/health"), 300, proc)
    return base


def ask(base: str) -> dict[str, Any]:
    status, body = http_json("POST", f"{base}/api/v1/chat", {"message": QUESTION, "max_tokens": 24, "temperature": 0.7})
    if status != 200:
        raise DemoError(f"the orchestrator answered {status}: {body}")
    answer: dict[str, Any] = body
    return answer


def show(answer: dict[str, Any]) -> None:
    print(f"  question : {QUESTION}")
    print(f"  answer   : {answer['response']!r}")
    print(
        f"  provider : {answer['provider']}  model: {answer['model']}  time: {answer['processing_time']}s"
        f"  fallback: {answer['fallback_used']}"
    )
    for i, source in enumerate(answer["sources"], 1):
        print(f"  source {i} : [{source['id']}] {source['text']}")


def main() -> int:
    started = time.monotonic()
    cluster_started = False
    keep = os.environ.get("SDC_DEMO_KEEP") == "1"
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        step("Local Kubernetes control plane (etcd, kube-apiserver, controllers, scheduler, KWOK nodes)")
        cluster_started = (
            subprocess.run(
                [PY, str(ROOT / "hack" / "cluster.py"), "status"], capture_output=True, check=False
            ).returncode
            != 0
        )
        out = run(PY, str(ROOT / "hack" / "cluster.py"), "up")
        print("  " + out.strip().replace("\n", "\n  "))

        step(f"helm install {RELEASE} charts/sdc -n {NAMESPACE}")
        if kubectl("get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False) == "Terminating":
            print(f"  namespace {NAMESPACE} is still being deleted from an earlier run; waiting")
            wait(
                f"namespace {NAMESPACE} to go",
                lambda: not kubectl("get", "namespace", NAMESPACE, "-o", "name", check=False),
                180,
            )
        helm(
            "upgrade",
            "--install",
            RELEASE,
            str(ROOT / "charts" / "sdc"),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "--take-ownership",
            "--wait",
            "--timeout",
            "3m",
        )
        print("  " + kubectl("get", "deploy", "-n", NAMESPACE).strip().replace("\n", "\n  "))

        step("The operator, with exactly the chart's RBAC")
        print("  KWOK simulates the operator's pod (no containers run here), so the real operator runs")
        print("  on this machine, authenticated as the chart's ServiceAccount.")
        operator = spawn(
            "operator",
            [PY, "-m", "sdc_operator"],
            env={
                "KUBECONFIG": str(sa_kubeconfig(f"{FULLNAME}-operator")),
                "SDC_STANDALONE": "true",
                "SDC_ENDPOINTS_CONFIGMAP": f"{FULLNAME}-endpoints",
                "SDC_ENDPOINTS_NAMESPACE": NAMESPACE,
                "SDC_METRICS_PORT": str(free_port()),
                "SDC_HEALTH_PORT": str(free_port()),
                "SDC_LOG_FORMAT": "plain",
            },
        )

        step(f"kubectl apply -f {MANIFEST.relative_to(ROOT)}")
        print("  " + kubectl("apply", "-n", NAMESPACE, "-f", str(MANIFEST)).strip())
        seen: list[str] = []

        def ready() -> bool:
            phase = kubectl(
                "get", "llm", "gemma2-9b", "-n", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False
            ).strip()
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
                print(f"  phase: {phase}")
            return phase == "Ready"

        wait("the LocalLLM to be Ready", ready, 180, operator)
        print("  " + kubectl("get", "llm", "-n", NAMESPACE, "-o", "wide").strip().replace("\n", "\n  "))
        published = kubectl(
            "get",
            "configmap",
            f"{FULLNAME}-endpoints",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.endpoints\\.json}",
            check=False,
        )
        print("  published for the orchestrator: " + json.dumps(json.loads(published or "{}"), ensure_ascii=False))

        step("Two real model servers (sdc-runtime): the primary, and a stand-in for Gemini's endpoint")
        given = os.environ.get("SDC_DEMO_MODEL_DIR")
        if given:
            primary_dir = fallback_dir = Path(given)
            print(f"  serving {primary_dir}")
        else:
            from sdc_runtime.tiny import make_tiny_model

            primary_dir = make_tiny_model(WORK / "tiny-primary", seed=1, max_positions=4096)
            fallback_dir = make_tiny_model(WORK / "tiny-fallback", seed=2, max_positions=4096)
            print("  made two random tiny models on the spot: their words are noise; the plumbing is real.")
        primary = model_server("primary", primary_dir, "local-model")
        fallback = model_server("fallback", fallback_dir, "gemini-stand-in")
        print(f"  primary  (provider transformers): {primary}/v1")
        print(f"  fallback (GEMINI_BASE_URL, Gemini's API is not reachable here): {fallback}/v1")

        step("The orchestrator: Korean documents in, a question answered with sources")
        port = free_port()
        orchestrator = spawn(
            "orchestrator",
            [PY, "-m", "sdc_orchestrator", "--port", str(port)],
            env={
                "LLM_SERVICE_TYPE": "transformers",
                "TRANSFORMERS_HOST": "127.0.0.1",
                "TRANSFORMERS_PORT": primary.rsplit(":", 1)[1],
                "GEMINI_API_KEY": "demo-stand-in",
                "GEMINI_BASE_URL": f"{fallback}/v1",
                "GEMINI_MODEL_NAME": "gemini-stand-in",
                "SDC_DATA_DIR": str(WORK / "documents"),
                "SDC_RAG_TOP_K": "2",
                "SDC_COOLDOWN_S": "30",
            },
        )
        base = f"http://127.0.0.1:{port}"
        wait("the orchestrator", lambda: up(f"{base}/healthz"), 120, orchestrator)
        status, body = http_json("POST", f"{base}/api/v1/documents", DOCUMENTS, timeout=120)
        if status != 200:
            raise DemoError(f"uploading documents failed: {status} {body}")
        print(f"  uploaded {len(DOCUMENTS)} documents: " + ", ".join(d["id"] for d in DOCUMENTS))
        answer = ask(base)
        show(answer)
        if answer["sources"][0]["id"] != "busan":
            raise DemoError("retrieval did not put the Busan document first")

        step("The primary model server stops: the same question, answered by the fallback")
        stop_primary(primary)
        answer = ask(base)
        show(answer)
        if answer["provider"] != "gemini" or not answer["fallback_used"]:
            raise DemoError(f"expected the fallback to answer, got {answer['provider']}")
        print(f"\n\033[1mDemo complete in {time.monotonic() - started:.0f}s.\033[0m")
        return 0
    except DemoError as err:
        print(f"\ndemo failed: {err}", file=sys.stderr)
        print(f"logs: {WORK} and {STATE / 'logs'}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"\nSDC_DEMO_KEEP=1: everything is left running. KUBECONFIG={KUBECONFIG}")
        else:
            cleanup(cluster_started)


def stop_primary(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    for proc in processes:
        args = [str(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
        if "sdc_runtime" in args and port in args:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            print(f"  stopped the primary (pid {proc.pid})")
            return
    raise DemoError("could not find the primary model server")


def cleanup(cluster_started: bool) -> None:
    print("\ncleaning up: stopping processes, uninstalling the release", flush=True)
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if KUBECONFIG.exists():
        kubectl("delete", "llm", "--all", "-n", NAMESPACE, "--wait=false", check=False)
        run(str(BIN / "helm"), f"--kubeconfig={KUBECONFIG}", "uninstall", RELEASE, "-n", NAMESPACE, check=False)
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    if cluster_started:
        run(PY, str(ROOT / "hack" / "cluster.py"), "down", check=False)
        print("stopped the local cluster it started")


if __name__ == "__main__":
    sys.exit(main())
