"""Time to first answer from zero on the real node, and where it goes (issue #24, item 4).

    SDC_CLUSTER_AUDIT=1 python hack/cluster.py up   # the real node; the audit log counts the scale writes
    python hack/images.py                           # cached: seconds when warm
    python benchmarks/scale_from_zero.py [transformers vllm ollama]

Per runtime: a LocalLLM at zero (autoscaling.minReplicas 0, maxReplicas 1) behind the chart's in-cluster
orchestrator; 64 streamed chats sent at once; the orchestrator holds them and asks for one replica. Checked:
every answer 200 with content (none lost, no 5xx), exactly one write to the LocalLLM's /scale (the API
server's audit log), the first token within 1 s of the pod being Ready. Then the model is scaled to zero
again and a second burst wakes it with the model already in its cache (the usual case: idle -> 0 -> a
request). The split, each step timed by watch events as they arrive here:

    ask        burst sent -> the orchestrator's scale write (audit log)
    operator   scale write -> pod created (the operator scales the Deployment, the ReplicaSet makes the pod)
    schedule   pod created -> bound to the node
    image      bound -> first container running (sandbox; the image was already on the node: kubelet's event)
    download   the init container fetching the model from the in-cluster hub (0 when none: Ollama pulls itself)
    engine     serving container running -> its /health answers (probed from here every 0.1 s; Ollama
               has no /health: its engine step runs to Ready and readiness reads 0)
    readiness  /health answers -> pod Ready (the kubelet's probe period)
    publish    pod Ready -> the operator's endpoints document names the pod
    route      published -> the first token at a client (the orchestrator's watch, its hold poll, generation)

Skips (exit 0 with a message) without the cluster's real node. Writes benchmarks/out/scale_from_zero.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import machine, table, write_report
from benchmarks.real_node import (
    PodClock,
    Release,
    audit_scale_writes,
    burst,
    cluster_kubeconfig,
    load_average,
    localllm,
    new_release,
)
from hack import hub
from tests.conftest import Kubectl, wait_until
from tests.support import tiny_gguf

CONCURRENCY = 64
AUTOSCALING = {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelaySeconds": 3600}
PROMPT = "서울의 날씨는 어떤가요? 한 문장으로 답해 주세요."
# 64 at once from one key: the chart's per-key cap (32 in flight) would answer half of them 429. vLLM's
# CPU image compiles the model at start: on this shared 2-core machine that took over the 300 s a request
# is held by default, so the bench waits longer (the figure is what it measures).
RELEASE_VALUES = [
    "--set",
    "orchestrator.limits.maxConcurrentPerKey=0",
    "--set",
    "orchestrator.scaleFromZero.maxWaitSeconds=1200",
]
# SDC_ZERO_WAKES: bursts per runtime (the first cold, the rest warm); more give a spread, not one figure.
WAKES = max(1, int(os.environ.get("SDC_ZERO_WAKES", "2")))
STEPS = ("ask", "operator", "schedule", "image", "download", "engine", "readiness", "publish", "route")


@dataclass(frozen=True)
class Runtime:
    name: str
    port: int
    ready_timeout: float


RUNTIMES = {
    "transformers": Runtime("transformers", 8000, 600),
    "vllm": Runtime("vllm", 8000, 1500),
    "ollama": Runtime("ollama", 11434, 600),
}
TINY, TINY_VLLM, GGUF_REPO = "sdc/tiny", "sdc/tiny-vllm", "sdc/tiny-gguf"


def prepare_hub(root: Path) -> Path:
    gguf = root / "models" / GGUF_REPO / "model.gguf"
    if not gguf.exists():
        gguf.parent.mkdir(parents=True, exist_ok=True)
        (root / "model.gguf.sha256").write_text(tiny_gguf.write(gguf))
    hub.prepare(root, {TINY: 0, TINY_VLLM: 0}, shapes={TINY_VLLM: hub.VLLM_SHAPE})
    for parent in root.parents:  # the hub runs as uid 1000: it must be able to walk to its files
        if parent in (Path(tempfile.gettempdir()), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    return root


def zero_llm(runtime: str, release: Release, hub_root: Path, **extra: Any) -> dict[str, Any]:
    """The LocalLLM of `runtime` at zero replicas, the orchestrator allowed to bring it to one."""
    common: dict[str, Any] = {"replicas": 0, "autoscaling": dict(AUTOSCALING), **extra}
    if runtime == "vllm":
        return localllm(
            "zero",
            release.ns,
            "vllm",
            TINY_VLLM,
            resources={"gpus": 0, "cpu": "1", "memory": "6Gi"},
            engine={"maxModelLen": 512},
            **common,
        )
    if runtime == "ollama":
        sha = (hub_root / "model.gguf.sha256").read_text().strip()
        url = f"{hub.url(release.ns)}/{GGUF_REPO}/resolve/{'0' * 40}/model.gguf"
        llm = localllm("zero", release.ns, "ollama", "tiny:latest", **common)
        llm["spec"]["model"] = {"name": "tiny:latest", "url": url, "sha256": sha, "parameters": {"num_thread": "1"}}
        return llm
    return localllm("zero", release.ns, "transformers", TINY, **common)


def wait_dormant(release: Release, llm: str) -> str:
    """Until the model is published as at zero (the `unready` key) and the orchestrator had time to read it;
    returns the name clients call it by."""
    kubectl = release.kubectl

    def at_zero() -> str | None:
        raw = kubectl("get", "configmap", f"{release.fullname}-endpoints", "-n", release.ns, "-o", "json", check=False)
        if not raw.startswith("{"):
            return None
        doc = json.loads(json.loads(raw)["data"].get("endpoints.json") or "{}")
        entry = next((e for e in doc.get("unready", []) if e.get("localLLM") == llm), None)
        ready = [e for e in doc.get("endpoints", []) if e.get("localLLM") == llm]
        return str(entry["model"]) if entry and entry.get("atZero") and not ready else None

    model = str(wait_until("the model published at zero", at_zero, timeout=300, interval=1))
    wait_until(
        "no pod left",
        lambda: not release.pods(f"llm.sdc.dev/localllm={llm}"),
        timeout=300,
        interval=1,
    )
    # The orchestrator up and following the document through the API (as one long up would be when its
    # model idles to zero), not still starting: that would be timed as the ask.
    wait_until(
        "the orchestrator to follow the endpoints through the API",
        lambda: (
            "endpoints from the API"
            in kubectl("logs", "-n", release.ns, f"deploy/{release.fullname}-orchestrator", check=False)
        ),
        timeout=300,
        interval=2,
    )
    time.sleep(3)  # the watch's latest event (0.2-0.8 s measured in #22)
    return model


def one_wake(release: Release, runtime: Runtime, llm: str, model: str) -> dict[str, Any]:
    """One burst of CONCURRENCY streamed chats at a model at zero: answers, writes, and the split."""
    clock = PodClock(release, llm, runtime.port)
    time.sleep(1)  # the watches have listed what exists
    before = set(clock.pods)
    load = load_average()
    t0 = time.time()
    answers = asyncio.run(burst(release, model, CONCURRENCY, PROMPT))
    time.sleep(2)  # the audit log is written in batches
    writes = audit_scale_writes(release.ns, llm, t0 - 1)
    clock.image_events()
    clock.stop()
    new = [t for name, t in clock.pods.items() if name not in before and t.ready is not None]
    if not new:
        raise RuntimeError(
            f"no new pod became Ready: {clock.pods}; answers: {[(a.status, a.error) for a in answers[:3]]}"
        )
    pod = min(new, key=lambda t: t.ready or 0)
    firsts = sorted(a.first_token or a.done for a in answers if a.status == 200)
    # A 200 whose stream ended normally is an answer; a random tiny model may end one at once (no text).
    ok = [a for a in answers if a.status == 200]
    failed = [a for a in answers if a.status != 200]
    if pod.ready is None:
        raise RuntimeError("unreachable: only Ready pods are kept")
    first = firsts[0] if firsts else float("nan")
    if writes is None:
        print("no audit log (the cluster was not started with SDC_CLUSTER_AUDIT=1): scale writes not counted")
    write_at = writes[0][0] if writes else float("nan")
    init_start = pod.init_started or pod.started or float("nan")
    init_done = pod.init_done or pod.started or float("nan")
    engine_up = pod.engine_up or pod.ready
    split = {
        "ask": write_at - t0,
        "operator": (pod.created or float("nan")) - write_at,
        "schedule": (pod.scheduled or float("nan")) - (pod.created or float("nan")),
        "image": init_start - (pod.scheduled or float("nan")),
        "download": init_done - init_start,
        "engine": engine_up - init_done,
        "readiness": pod.ready - engine_up,
        "publish": (pod.published or float("nan")) - pod.ready,
        "route": first - (pod.published or float("nan")),
    }
    return {
        "answers": len(answers),
        "ok": len(ok),
        "with_text": sum(a.first_token is not None for a in answers),
        "failed": [(a.status, a.error) for a in failed][:5],
        "statuses": sorted({a.status for a in answers}),
        "writes": None if writes is None else len(writes),
        "writers": sorted({w[2] for w in writes or []}),
        "first_answer_s": first - t0,
        "all_first_tokens_s": (firsts[-1] - t0) if firsts else float("nan"),
        "first_after_ready_s": first - pod.ready,
        "last_first_after_ready_s": (firsts[-1] - pod.ready) if firsts else float("nan"),
        # The whole burst answered (the last stream's end), from Ready: what a bounded release may cost.
        "all_done_after_ready_s": max(a.done for a in ok) - pod.ready if ok else float("nan"),
        "image_present": pod.image_present,
        "split": split,
        "load": load,
        "sent_spread_s": max(a.sent for a in answers) - t0,
        "at": {"t0": t0, "write": write_at, "ready": pod.ready, "published": pod.published, "first": first},
    }


def to_zero(release: Release, llm: str) -> None:
    release.kubectl("scale", "llm", llm, "-n", release.ns, "--replicas=0")


def measure(release: Release, runtime: Runtime, hub_root: Path, wakes: int = 2) -> list[dict[str, Any]]:
    """`wakes` bursts: the first with the model not yet cached, the others with it cached."""
    release.kubectl.apply(zero_llm(runtime.name, release, hub_root))
    results = []
    for i in range(wakes):
        if i:
            to_zero(release, "zero")
        model = wait_dormant(release, "zero")
        result = one_wake(release, runtime, "zero", model)
        result["cache"] = "cold (first start)" if i == 0 else "warm (model cached)"
        results.append(result)
        print(f"{runtime.name} wake {i + 1}: {json.dumps(result, default=str)}", flush=True)
    release.kubectl("delete", "llm", "zero", "-n", release.ns, "--timeout=180s", check=False)
    return results


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for name, runs in results.items():
        for r in runs:
            rows.append(
                [
                    name,
                    r["cache"],
                    f"{r['ok']}/{r['answers']} ({r['with_text']} with text)",
                    ",".join(str(s) for s in r["statuses"]),
                    "not counted (no audit log)" if r["writes"] is None else r["writes"],
                    f"{r['first_answer_s']:.1f}",
                    f"{r['first_after_ready_s']:.2f}",
                    f"{r['all_first_tokens_s']:.1f}",
                    f"{r['last_first_after_ready_s']:.2f}",
                    f"{r['all_done_after_ready_s']:.2f}",
                    r["load"],
                ]
            )
    split_rows = [
        [name, r["cache"], *(f"{r['split'][s]:.2f}" for s in STEPS)] for name, runs in results.items() for r in runs
    ]
    return "\n".join(
        [
            "## Scale from zero on the real node (`benchmarks/scale_from_zero.py`)",
            "",
            f"Machine: {machine()}. {CONCURRENCY} streamed chats sent at once at a LocalLLM at zero "
            "(autoscaling.minReplicas 0) through the chart's in-cluster orchestrator; one tiny model per runtime "
            "from the in-cluster hub; images already on the node. Load average (1/5/15 min) at the start of "
            "each burst beside it: the machine is shared.",
            "",
            table(
                [
                    "runtime",
                    "model cache",
                    "answered (200)",
                    "statuses",
                    "scale writes",
                    "first answer from zero (s)",
                    "first token after Ready (s)",
                    "last first token (s)",
                    "last first token after Ready (s)",
                    "all answered after Ready (s)",
                    "load",
                ],
                rows,
            ),
            "",
            "Where the time to first answer goes (seconds; see the script's docstring for each step):",
            "",
            table(["runtime", "model cache", *STEPS], split_rows),
            "",
        ]
    )


def main(argv: list[str]) -> int:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        print("scale_from_zero: skipped (no local cluster with its real node: `python hack/cluster.py up`)")
        return 0
    kubectl = Kubectl(kubeconfig)
    names = argv or ["transformers", "vllm"]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sdc-zero-hub-") as tmp:
        hub_root = prepare_hub(Path(tmp))
        for name in names:
            release = new_release(kubectl, kubeconfig, f"zero-{name[:5]}")
            release.extra_values = RELEASE_VALUES
            try:
                release.install(hub_root)
                results[name] = measure(release, RUNTIMES[name], hub_root, WAKES)
            finally:
                release.uninstall()
    write_report("scale_from_zero", report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
