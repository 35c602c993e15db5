#!/usr/bin/env python3
"""`make demo`: the whole stack as real containers on this machine, with no GPU and no registry.

1. the local Kubernetes cluster: real control plane, KWOK GPU nodes, and one real node
2. the images, built here from images/*.Dockerfile and loaded into the real node
3. a model hub inside the cluster, serving a tiny model (nothing here reaches huggingface.co)
4. `helm install` of the chart: the operator and the orchestrator run as pods on the real node
5. a LocalLLM named demo-chat: by default Transformers (downloaded by its init container, served
   by sdc-runtime: the quickest to show); SDC_DEMO_RUNTIME=vllm serves it with vLLM on CPU (the
   CPU vLLM image, a few minutes to start), SDC_DEMO_RUNTIME=ollama with Ollama (a GGUF from the hub)
6. the in-cluster orchestrator answering a Korean question with retrieved sources, through the
   endpoint the operator published

Everything it starts is removed at the end; SDC_DEMO_KEEP=1 leaves release `sdc` in namespace
`sdc-demo` running. A random tiny model is made on the spot unless SDC_DEMO_MODEL_DIR names a
real Transformers model directory (transformers and vllm); a random model's words are noise, the
plumbing is the point.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
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
from hack import common, hub  # noqa: E402
from hack.common import BIN, KUBECONFIG, STATE  # noqa: E402
from hack.node import NODE_LINKS_CIDR  # noqa: E402

WORK = STATE / "demo"
PY = sys.executable
NAMESPACE = os.environ.get("SDC_DEMO_NAMESPACE", "sdc-demo")
RELEASE = os.environ.get("SDC_DEMO_RELEASE", "sdc")
# The chart's sdc.fullname: the release name, with "-sdc" unless it already says sdc.
FULLNAME = (RELEASE if "sdc" in RELEASE else f"{RELEASE}-sdc")[:50].rstrip("-")
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


class DemoError(common.HackError):
    pass


step_number = 0


def step(title: str) -> None:
    global step_number
    step_number += 1
    print(f"\n\033[1m[{step_number}/{STEPS}] {title}\033[0m", flush=True)


def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    return common.run(list(argv), stdin=stdin, check=check, error=DemoError).stdout


def streamed(*argv: str) -> None:
    """Run a long step with its output shown as it comes (indented), not all at once at the end."""
    with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            print("  " + line.rstrip(), flush=True)
            tail = [*tail[-20:], line]
        if proc.wait() != 0:
            raise DemoError(f"{' '.join(argv[:4])} ... failed (exit {proc.returncode}): {''.join(tail).strip()}")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return common.kubectl(KUBECONFIG, *args, stdin=stdin, check=check, error=DemoError)


def helm(*args: str) -> str:
    return run(str(BIN / "helm"), f"--kubeconfig={KUBECONFIG}", *args)


def wait(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen[bytes] | None = None) -> Any:
    def exited() -> str | None:
        if proc is not None and proc.poll() is not None:
            return f"{what}: the process exited ({proc.returncode}); see {WORK}"
        return None

    return common.wait_for(what, check, timeout, exited=exited, error=DemoError)


def api_key() -> str:
    """The admin key the chart generated (NOTES.txt reads it the same way): every chat route needs one."""
    encoded = kubectl("get", "secret", f"{FULLNAME}-api-keys", "-n", NAMESPACE, "-o", "jsonpath={.data.keys}")
    first = base64.b64decode(encoded).decode().splitlines()[0]
    return first.split(":", 1)[1]


def http_json(method: str, url: str, body: Any = None, timeout: float = 60, key: str = "") -> tuple[int, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.request(method, url, json=body, timeout=timeout, headers=headers)
    except httpx.HTTPError:
        return 0, None
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


def up(url: str) -> bool:
    return http_json("GET", url, timeout=2)[0] == 200


def show(answer: dict[str, Any]) -> None:
    print(f"  question : {QUESTION}")
    print(f"  answer   : {answer['response']!r}")
    print(
        f"  provider : {answer['provider']}  model: {answer['model']}  time: {answer['processing_time']}s"
        f"  fallback: {answer['fallback_used']}"
    )
    for i, source in enumerate(answer["sources"], 1):
        print(f"  source {i} : [{source['id']}] {source['text']}")


HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"
RUNTIME = os.environ.get("SDC_DEMO_RUNTIME", "transformers")
# One repository per runtime: the hub's files are kept between runs, and vLLM's needs its own shape.
MODEL_REPO = {"transformers": "sdc-demo/tiny-chat", "vllm": "sdc-demo/tiny-chat-vllm"}.get(
    RUNTIME, "sdc-demo/tiny-gguf"
)
LLM_NAME = "demo-chat"
RUNTIME_IMAGE = "ghcr.io/sdc-llm/sdc-runtime:0.1.0"
STEPS = 6
HOST_CHAT_INGRESS = [{"podSelector": {}}, {"ipBlock": {"cidr": NODE_LINKS_CIDR}}]


def indent(text: str) -> str:
    return "  " + text.strip().replace("\n", "\n  ")


def cluster_ip_url(service: str) -> str:
    ip = kubectl("get", "service", service, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}").strip()
    port = kubectl("get", "service", service, "-n", NAMESPACE, "-o", "jsonpath={.spec.ports[0].port}").strip()
    return f"http://{ip}:{port}"


def llm_spec(hub_root: Path) -> dict[str, Any]:
    """The demo LocalLLM's spec for SDC_DEMO_RUNTIME."""
    model = {"name": MODEL_REPO, "revision": HUB_REVISION}
    if RUNTIME == "vllm":
        # vLLM on CPU: about 4 GiB resident (KV cache from the memory request), one core.
        return {
            "runtime": "vllm",
            "model": model,
            "resources": {"gpus": 0, "cpu": "1", "memory": "6Gi"},
            "engine": {"maxModelLen": 2048},
        }
    if RUNTIME == "ollama":
        sha256 = (hub_root / "model.gguf.sha256").read_text().strip()
        url = f"{hub.url(NAMESPACE)}/{MODEL_REPO}/resolve/{HUB_REVISION}/model.gguf"
        return {
            "runtime": "ollama",
            "model": {"name": "tiny:latest", "url": url, "sha256": sha256, "parameters": {"num_thread": "1"}},
            "resources": {"gpus": 0},
        }
    return {"runtime": "transformers", "model": model, "resources": {"gpus": 0}}


def prepare_hub(hub_root: Path) -> None:
    """The demo model's files under hub_root/models (and the hub's code)."""
    given = os.environ.get("SDC_DEMO_MODEL_DIR")
    if given and RUNTIME != "ollama":
        shutil.copytree(given, hub_root / "models" / MODEL_REPO, dirs_exist_ok=True)
        print(f"  serving a copy of {given}")
    else:
        print("  a random tiny model made on the spot: its words are noise; the plumbing is real.")
    if RUNTIME == "ollama":
        from tests.support import tiny_gguf

        gguf = hub_root / "models" / MODEL_REPO / "model.gguf"
        gguf.parent.mkdir(parents=True, exist_ok=True)
        (hub_root / "model.gguf.sha256").write_text(tiny_gguf.write(gguf))
        hub.prepare(hub_root, {}, python=PY)
    else:
        shapes = {MODEL_REPO: hub.VLLM_SHAPE} if RUNTIME == "vllm" else {}
        hub.prepare(hub_root, {} if given else {MODEL_REPO: 1}, python=PY, shapes=shapes)


def main() -> int:
    if RUNTIME not in ("transformers", "vllm", "ollama"):
        print(f"SDC_DEMO_RUNTIME={RUNTIME}: choose transformers (default), vllm or ollama", file=sys.stderr)
        return 2
    started = time.monotonic()
    cluster_started = False
    keep = os.environ.get("SDC_DEMO_KEEP") == "1"
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        step("Local Kubernetes cluster: real control plane, KWOK GPU nodes, one real node")
        cluster_started = (
            subprocess.run(
                [PY, str(ROOT / "hack" / "cluster.py"), "status"], capture_output=True, check=False
            ).returncode
            != 0
        )
        print("  cold: builds the cluster binaries from Go modules (minutes, once); warm: seconds", flush=True)
        streamed(PY, str(ROOT / "hack" / "cluster.py"), "up")

        step("Images built here (local Debian base, cached by content) and loaded into the real node")
        print("  cold: about 45 min (torch in the runtime image), shown as it builds; warm: seconds", flush=True)
        streamed(PY, str(ROOT / "hack" / "images.py"))

        step(f"A model hub inside the cluster, serving {MODEL_REPO}")
        if kubectl("get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False) == "Terminating":
            print(f"  namespace {NAMESPACE} is still being deleted from an earlier run; waiting")
            wait(
                f"namespace {NAMESPACE} to go",
                lambda: not kubectl("get", "namespace", NAMESPACE, "-o", "name", check=False),
                180,
            )
        kubectl("create", "namespace", NAMESPACE, check=False)
        hub_root = WORK / "hub"
        prepare_hub(hub_root)
        kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": hub.objects(NAMESPACE, hub_root, RUNTIME_IMAGE, HUB_REVISION),
                }
            ),
        )
        kubectl("rollout", "status", "deployment/hub", "-n", NAMESPACE, "--timeout=180s")
        print(f"  {hub.url(NAMESPACE)} (the operator's HF_ENDPOINT)")

        step(f"helm install {RELEASE} charts/sdc -n {NAMESPACE} --wait: operator and orchestrator as pods")
        print("  waiting for both pods to be Ready (image pulls are local; the orchestrator loads Kiwi, ~10 s)")
        installed = time.monotonic()
        helm(
            "upgrade",
            "--install",
            RELEASE,
            str(ROOT / "charts" / "sdc"),
            "-n",
            NAMESPACE,
            *hub.chart_values(NAMESPACE),  # HF_ENDPOINT, and the engines' egress opened to the hub
            # The node enforces NetworkPolicies: the chat API admits the release's pods and, here, this
            # machine (its requests reach the pods from the node's link, outside the cluster).
            "--set-json",
            f"networkPolicy.chatIngressFrom={json.dumps(HOST_CHAT_INGRESS)}",
            "--take-ownership",
            # The orchestrator is Ready with no model yet (it says so in /readyz): --wait returns once both
            # pods serve, as Argo CD or Flux would see it.
            "--wait",
            "--timeout",
            "5m",
        )
        print(f"  helm install --wait returned: operator and orchestrator Ready ({time.monotonic() - installed:.0f}s)")
        print(indent(kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide")))

        step(f"kubectl apply: a LocalLLM ({LLM_NAME}, runtime {RUNTIME}) on the real node")
        manifest = {
            "apiVersion": "llm.sdc.dev/v1alpha1",
            "kind": "LocalLLM",
            "metadata": {"name": LLM_NAME, "namespace": NAMESPACE},
            "spec": llm_spec(hub_root),
        }
        applied = time.monotonic()
        print(indent(kubectl("apply", "-f", "-", stdin=json.dumps(manifest))))
        print("  waiting: Pending (scheduling), Downloading (the init container fetches the model from the hub),")
        print("  Starting (sdc-runtime loads it, Ready by its probe), Ready (the operator publishes the endpoint)")
        seen: list[str] = []

        def ready() -> bool:
            status = kubectl(
                "get",
                "llm",
                LLM_NAME,
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.status.phase}{'\\t'}{.status.message}",
                check=False,
            ).strip()
            phase, _, message = status.partition("\t")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
                print(f"  phase: {phase}  ({time.monotonic() - applied:.0f}s){'  ' + message if message else ''}")
            return phase == "Ready"

        wait("the LocalLLM to be Ready", ready, 1200 if RUNTIME == "vllm" else 600)
        print(f"  Ready {time.monotonic() - applied:.0f}s after kubectl apply")
        print(indent(kubectl("get", "llm", "-n", NAMESPACE, "-o", "wide")))
        print(indent(kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide")))
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

        step("The in-cluster orchestrator: Korean documents in, a question answered with sources")
        base = cluster_ip_url(f"{FULLNAME}-orchestrator")
        print(f"  {FULLNAME}-orchestrator at {base} (its ClusterIP, routed from this machine into the node)")
        wait("the orchestrator", lambda: up(f"{base}/healthz"), 120)
        key = api_key()
        # The endpoint reaches the orchestrator as a mounted ConfigMap, which the kubelet refreshes on its
        # own sync (up to about a minute): /readyz's body says when chat has somewhere to go.
        print("  waiting for the orchestrator to see the published endpoint (the kubelet refreshes mounted")
        print("  ConfigMaps within about a minute); its /readyz says 'no model yet' until then")
        seen_at = time.monotonic()
        wait("the orchestrator to route chat", lambda: chat_state(base) == "ready", 180)
        print(f"  /readyz: chat ready ({time.monotonic() - seen_at:.0f}s)")
        status, body = http_json("POST", f"{base}/api/v1/documents", DOCUMENTS, timeout=120, key=key)
        if status != 200:
            raise DemoError(f"uploading documents failed: {status} {body}")
        print(f"  uploaded {len(DOCUMENTS)} documents: " + ", ".join(d["id"] for d in DOCUMENTS))
        answer = wait("an answer", lambda: ask_or_none(base, key), 180)
        show(answer)
        if answer["sources"][0]["id"] != "busan":
            raise DemoError("retrieval did not put the Busan document first")
        print(f"\n\033[1mDemo complete in {time.monotonic() - started:.0f}s.\033[0m")
        return 0
    except DemoError as err:
        print(f"\ndemo failed: {err}", file=sys.stderr)
        print(kubectl("get", "pods,llm", "-n", NAMESPACE, "-o", "wide", check=False), file=sys.stderr)
        print(f"logs: {WORK}, {STATE / 'logs'} and {STATE / 'node' / 'logs'}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(
                f"\nSDC_DEMO_KEEP=1: release {RELEASE} stays in namespace {NAMESPACE}. Reach the orchestrator with"
                f"\n  export KUBECONFIG={KUBECONFIG}"
                f"\n  kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-orchestrator 8080:8080"
                "\nand remove everything with `make cluster-down`."
            )
        else:
            cleanup(cluster_started)


def chat_state(base: str) -> str:
    status, body = http_json("GET", f"{base}/readyz", timeout=5)
    return str(body.get("chat", "")) if status == 200 and isinstance(body, dict) else ""


def ask_or_none(base: str, key: str) -> dict[str, Any] | None:
    status, body = http_json(
        "POST",
        f"{base}/api/v1/chat",
        {"message": QUESTION, "provider": RUNTIME, "max_tokens": 24, "temperature": 0.7},
        key=key,
    )
    return body if status == 200 and isinstance(body, dict) else None


def cleanup(cluster_started: bool) -> None:
    print("\ncleaning up: uninstalling the release, removing the namespace", flush=True)
    if KUBECONFIG.exists():
        kubectl("delete", "llm", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False)
        run(str(BIN / "helm"), f"--kubeconfig={KUBECONFIG}", "uninstall", RELEASE, "-n", NAMESPACE, check=False)
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    if cluster_started:
        run(PY, str(ROOT / "hack" / "cluster.py"), "down", check=False)
        print("stopped the local cluster it started")


if __name__ == "__main__":
    sys.exit(main())
