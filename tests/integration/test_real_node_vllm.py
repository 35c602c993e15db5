"""vLLM for real on the real node: the CPU vLLM image serving a tiny Llama, end to end.

What it proves that the argument-parser check cannot: the pod spec the operator
builds for `runtime: vllm, gpus: 0` starts the real `vllm serve` (image, user,
caches, /dev/shm, KV-cache size and threads from the spec), Ready only through
its real probes; the in-cluster orchestrator answers through it on both chat
APIs; vLLM's /metrics (labelled for scraping) is reachable from the
orchestrator's pod and shows prefix-cache hits for a repeated prompt; the
orchestrator learns the new endpoint through its ConfigMap watch within
seconds (the mounted file, 60-90 s late, is measured beside it); a deleted
vLLM pod is replaced and answers again.

One replica (about 4 GB resident). The model: hub.VLLM_SHAPE (head_dim 32, the
least vLLM's CPU attention takes), float32 weights, max-model-len 512.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hack import hub
from tests.conftest import KUBECTL, Kubectl, wait_until
from tests.integration import real_node_setup
from tests.integration.operator_harness import GROUP_VERSION, REVISION
from tests.integration.real_node_setup import (
    CHART,
    api_key,
    chart_values,
    helm,
    open_to_hub,
    pods,
    ready,
    service_url,
    start_hub,
    try_chat,
    wait_llm_ready,
)

MODEL = "sdc/tiny-vllm"
LLM = "tiny-vllm"
PROMPT = " ".join(["서울은 대한민국의 수도입니다. 부산은 항구 도시입니다."] * 14)  # a long shared prefix


@pytest.fixture
def release(kubectl: Kubectl, kubeconfig: Path) -> Iterator[tuple[str, str]]:
    yield from real_node_setup.release(kubectl, kubeconfig, f"e2e-vllm-{uuid.uuid4().hex[:6]}", "120s")


@pytest.fixture(scope="module")
def vllm_hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub-vllm")
    hub.prepare(root, {MODEL: 0}, shapes={MODEL: hub.VLLM_SHAPE})
    return open_to_hub(root)


def vllm_llm(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "vllm",
            "model": {"name": MODEL, "revision": REVISION},
            "resources": {"gpus": 0, "cpu": "1", "memory": "6Gi"},
            "engine": {"maxModelLen": 512},
        },
    }


# Runs in the orchestrator's pod: the wall-clock times (the node shares this machine's clock) at which
# /readyz first answered 200 and the mounted endpoints file first named the LocalLLM (argv[1]).
ENDPOINT_PROBE = """
import json, sys, time, urllib.request
seen, deadline = {}, time.time() + 1500
while len(seen) < 2 and time.time() < deadline:
    try:
        if "api" not in seen and urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=2).status == 200:
            seen["api"] = time.time()
    except OSError:
        pass
    try:
        if "file" not in seen and sys.argv[1] in open("/etc/sdc/endpoints/endpoints.json").read():
            seen["file"] = time.time()
    except OSError:
        pass
    time.sleep(0.1)
print(json.dumps(seen))
"""


def in_pod(kubectl: Kubectl, namespace: str, pod: str, code: str) -> str:
    """Run Python in a pod (the orchestrator's image has it): what a scraper next to it would see."""
    return kubectl("exec", "-n", namespace, pod, "--", "python", "-c", code)


def metric(text: str, name: str) -> float:
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    assert values, f"{name} not in /metrics"
    return sum(values)


@pytest.mark.timeout(3600)  # a cold run builds the images first, the vLLM image included
def test_vllm_on_cpu_on_real_pods(
    kubectl: Kubectl, kubeconfig: Path, real_node: str, images: None, vllm_hub_root: Path, release: tuple[str, str]
) -> None:
    name, ns = release
    values = chart_values(ns)
    start_hub(kubectl, ns, vllm_hub_root)
    helm(kubeconfig, "install", name, str(CHART), "-n", ns, *values, "--take-ownership")
    release_pods = f"app.kubernetes.io/instance={name}"
    wait_until(
        "the operator pod to be Ready",
        lambda: [p for p in pods(kubectl, ns, f"{release_pods},app.kubernetes.io/name=sdc-operator") if ready(p)],
        timeout=300,
        interval=1,
    )

    (orchestrator,) = wait_until(
        "the orchestrator's container to run (not Ready: there is no model yet)",
        lambda: [
            p["metadata"]["name"]
            for p in pods(kubectl, ns, f"{release_pods},app.kubernetes.io/name=sdc-orchestrator")
            if any(c.get("started") for c in p.get("status", {}).get("containerStatuses", []))
        ],
        timeout=300,
        interval=1,
    )
    # In the orchestrator's pod, from before the model exists: when its /readyz first answers 200 (the
    # registry has the endpoint, through the API watch) and when the mounted file first names the model.
    watcher = subprocess.Popen(
        [
            KUBECTL,
            f"--kubeconfig={kubeconfig}",
            "exec",
            "-n",
            ns,
            orchestrator,
            "--",
            "python",
            "-c",
            ENDPOINT_PROBE,
            LLM,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    # 1. The vLLM LocalLLM: Ready only through vLLM's own probes.
    started = time.monotonic()
    kubectl.apply(vllm_llm(LLM, ns))
    llm = wait_llm_ready(kubectl, LLM, ns, timeout=1200, interval=0.5)
    ready_at = time.time()
    print(f"\nvLLM LocalLLM: kubectl apply -> Ready in {time.monotonic() - started:.1f}s")
    (engine,) = [p for p in pods(kubectl, ns, f"llm.sdc.dev/localllm={LLM}") if ready(p)]
    container = engine["spec"]["containers"][0]
    assert engine["spec"]["nodeName"] == real_node
    assert container["image"].startswith("ghcr.io/sdc-llm/sdc-vllm-cpu:") and container["command"] == ["vllm", "serve"]
    assert engine["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert not [t for t in engine["spec"].get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
    annotations = engine["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"

    # 2. The orchestrator learns the endpoint through its watch (seconds), long before the mounted file.
    out, err = watcher.communicate(timeout=240)
    seen = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert "api" in seen, f"the orchestrator never had the endpoint: {out} {err}"
    api_delay = seen["api"] - ready_at
    file_delay = seen.get("file", float("nan")) - ready_at
    print(f"endpoint update after Ready: orchestrator (API watch) {api_delay:.1f}s; mounted file {file_delay:.1f}s")
    assert api_delay < 5, "the orchestrator did not follow the ConfigMap through the API"
    fullname = name if "sdc" in name else f"{name}-sdc"
    base = service_url(kubectl, ns, f"{fullname}-orchestrator")
    key = api_key(kubectl, ns, fullname)
    auth = {"Authorization": f"Bearer {key}"}
    served = llm["status"]["servedModelName"]

    # 3. Both chat APIs through the in-cluster orchestrator.
    answer = wait_until("a chat answer from vllm", lambda: try_chat(base, "vllm", key), timeout=120, interval=2)
    assert answer["provider"] == "vllm" and not answer["fallback_used"], answer
    timings = []
    for _ in range(3):  # the same long prompt: vLLM serves its prefix from the cache the 2nd and 3rd time
        sent = time.monotonic()
        completion = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": served, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8},
            headers=auth,
            timeout=120,
        )
        timings.append(time.monotonic() - sent)
        assert completion.status_code == 200, completion.text
        assert completion.json()["choices"][0]["message"]["role"] == "assistant"

    # 4. vLLM's /metrics from the orchestrator's pod (the engines' NetworkPolicy admits it).
    engine_url = service_url(kubectl, ns, LLM)
    text = in_pod(
        kubectl,
        ns,
        orchestrator,
        f"import urllib.request; print(urllib.request.urlopen('{engine_url}/metrics').read().decode())",
    )
    queries, hits = metric(text, "vllm:prefix_cache_queries_total"), metric(text, "vllm:prefix_cache_hits_total")
    print(
        f"same prompt x3: {', '.join(f'{t * 1000:.0f}' for t in timings)} ms; prefix cache {hits:.0f}/{queries:.0f} tokens hit"
    )
    assert hits > 0, "a repeated prompt found nothing in vLLM's prefix cache"
    for name_ in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        metric(text, name_)
    # The pod's memory as its cgroup counts it (what its memory limit applies to; cgroup v2 or v1).
    cgroup = "cat /sys/fs/cgroup/memory.current 2>/dev/null || cat /sys/fs/cgroup/memory/memory.usage_in_bytes"
    memory = kubectl("exec", "-n", ns, engine["metadata"]["name"], "-c", "vllm", "--", "sh", "-c", cgroup, check=False)
    if memory.strip().isdigit():
        print(f"vLLM pod memory (its cgroup): {int(memory) / 2**30:.2f} GiB")

    # 5. The vLLM pod deleted: a replacement becomes Ready and answers.
    kubectl("delete", "pod", engine["metadata"]["name"], "-n", ns, "--wait=false")
    wait_until(
        "the LocalLLM to leave Ready",
        lambda: kubectl.get("llm", LLM, "-n", ns).get("status", {}).get("phase") != "Ready",
        timeout=60,
        interval=0.2,
    )
    replaced = time.monotonic()
    wait_until(
        "the vLLM LocalLLM to be Ready again",
        lambda: kubectl.get("llm", LLM, "-n", ns).get("status", {}).get("phase") == "Ready",
        timeout=1200,
        interval=1,
    )
    print(f"vLLM pod replaced and Ready in {time.monotonic() - replaced:.1f}s")
    replacement = [p for p in pods(kubectl, ns, f"llm.sdc.dev/localllm={LLM}") if ready(p)]
    assert replacement and replacement[0]["metadata"]["uid"] != engine["metadata"]["uid"]
    assert wait_until("vllm to answer again", lambda: try_chat(base, "vllm", key), timeout=120, interval=1)
    kubectl("delete", "llm", LLM, "-n", ns, "--timeout=120s")
