"""Scale-down with requests in flight, on the real node (issue #24): none may fail.

    python benchmarks/scale_down_drain.py      # the cluster up with its real node (see scale_from_zero.py)

A sdc-runtime LocalLLM at two replicas behind the chart's orchestrator; clients keep streamed chats in
flight through it while the LocalLLM is scaled to one (`kubectl scale`, as the orchestrator's own scale-down
writes it). Counted: requests, failures (anything but a 200 whose stream ends normally), the requests the
leaving pod answered after it was marked for deletion, and when it left the published replicas. Run twice:
with the engines' preStop pause (the default, SDC_ENGINE_DRAIN_SECONDS=10) and without it (0, set on the
operator's Deployment: the operator then rolls the engine pods). Writes benchmarks/out/scale_down_drain.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import machine, table, write_report
from benchmarks.real_node import (
    Answer,
    PodClock,
    Release,
    cluster_kubeconfig,
    load_average,
    localllm,
    new_release,
    one_stream,
    pod_ready,
)
from benchmarks.scale_from_zero import TINY, prepare_hub
from tests.conftest import Kubectl, wait_until

CLIENTS = 6
SERVICE_CLIENTS = 2
PROMPT = "부산은 어떤 도시인가요? 자세히 설명해 주세요."
MAX_TOKENS = 48  # long enough that requests are mid-stream when the pod is told to stop


def two_replicas(release: Release, llm: str) -> list[dict[str, Any]]:
    """`llm` at two Ready, published replicas (the orchestrator's own scaler kept out of the way)."""
    release.kubectl(
        "patch",
        "llm",
        llm,
        "-n",
        release.ns,
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "replicas": 2,
                    "autoscaling": {
                        "minReplicas": 1,
                        "maxReplicas": 2,
                        "targetWaitingPerReplica": 10000,
                        "scaleDownDelaySeconds": 3600,
                    },
                }
            }
        ),
    )

    def published() -> list[dict[str, Any]] | None:
        pods = [p for p in release.pods(f"llm.sdc.dev/localllm={llm}") if pod_ready(p)]
        raw = release.kubectl(
            "get", "configmap", f"{release.fullname}-endpoints", "-n", release.ns, "-o", "json", check=False
        )
        if not raw.startswith("{"):  # not published yet
            return None
        doc = json.loads(json.loads(raw)["data"].get("endpoints.json") or "{}")
        named = {e.get("replica") for e in doc.get("endpoints", [])}
        ok = len(pods) == 2 and all(p["metadata"]["name"] in named for p in pods)
        return pods if ok else None

    pods = wait_until("two Ready, published replicas", published, timeout=600, interval=1)
    time.sleep(3)  # the orchestrator follows the document through its watch
    return list(pods)


async def keep_busy(
    release: Release, model: str, stop: asyncio.Event, answers: list[Answer], direct: list[Answer], service: str
) -> None:
    """CLIENTS through the orchestrator, SERVICE_CLIENTS straight at the LocalLLM's Service (kube-proxy picks
    the pod: clients of the engine that do not go through the orchestrator)."""
    via_service = dataclasses.replace(release, base=service, key="")
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as client:

        async def client_loop(i: int, target: Release, out: list[Answer]) -> None:
            n = 0
            while not stop.is_set():
                # Prompts of their own (a new first block each): the router spreads unseen prefixes over
                # both replicas, where one repeated prompt would stay with the replica that cached it.
                n += 1
                prompt = f"{i}-{n}-{uuid.uuid4().hex[:8]}번 질문. {PROMPT}"
                out.append(await one_stream(client, target, model, prompt, MAX_TOKENS))

        await asyncio.gather(
            *(client_loop(i, release, answers) for i in range(CLIENTS)),
            *(client_loop(100 + i, via_service, direct) for i in range(SERVICE_CLIENTS)),
        )


def scale_down_under_load(release: Release, llm: str, model: str, port: int) -> dict[str, Any]:
    """2 -> 1 while CLIENTS streams run; every answer counted."""
    clock = PodClock(release, llm, port, probe=False)
    answers: list[Answer] = []
    direct: list[Answer] = []
    svc = release.kubectl.get("service", llm, "-n", release.ns)
    service = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    load = load_average()

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(keep_busy(release, model, stop, answers, direct, service))
        await asyncio.sleep(8)  # both replicas busy
        scaled = time.time()
        await asyncio.to_thread(release.kubectl, "scale", "llm", llm, "-n", release.ns, "--replicas=1")
        deadline = time.time() + 180
        while time.time() < deadline:
            leaving = [t for t in clock.pods.values() if t.terminating is not None]
            if leaving and all(t.gone is not None for t in leaving):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # and a little after: the remaining replica takes everything
        stop.set()
        await task
        return scaled

    scaled = asyncio.run(scenario())
    clock.stop()
    leaving = [t for t in clock.pods.values() if t.terminating is not None]
    if len(leaving) != 1:
        raise RuntimeError(f"expected one pod to leave: {clock.pods}")
    victim = leaving[0]
    failed = [a for a in answers if a.status != 200]
    after_mark = [a for a in answers if a.replica.endswith(victim.name) and a.done >= (victim.terminating or 0)]
    sent_after_mark = [a for a in after_mark if a.sent >= (victim.terminating or 0)]
    return {
        "requests": len(answers),
        "failed": len(failed),
        "errors": Counter(f"{a.status} {a.error[:120]}" for a in failed).most_common(3),
        "per_replica": Counter(a.replica.rsplit("/", 1)[-1] for a in answers),
        "service_requests": len(direct),
        "service_failed": sum(a.status != 200 for a in direct),
        "service_errors": Counter(f"{a.status} {a.error[:120]}" for a in direct if a.status != 200).most_common(3),
        "victim_finished_after_mark": len(after_mark),
        "victim_sent_after_mark": len(sent_after_mark),
        "unpublished_after_mark_s": (victim.unpublished or float("nan")) - (victim.terminating or float("nan")),
        "gone_after_mark_s": (victim.gone or float("nan")) - (victim.terminating or float("nan")),
        "mark_after_scale_s": (victim.terminating or float("nan")) - scaled,
        "load": load,
    }


def set_drain(release: Release, seconds: int) -> None:
    """The operator's SDC_ENGINE_DRAIN_SECONDS; the operator restarts and rolls the engine pods."""
    release.kubectl(
        "set", "env", f"deployment/{release.fullname}-operator", "-n", release.ns, f"SDC_ENGINE_DRAIN_SECONDS={seconds}"
    )
    release.kubectl("rollout", "status", f"deployment/{release.fullname}-operator", "-n", release.ns, "--timeout=300s")


def measure(release: Release, llm: str, drains: tuple[int, ...] = (10, 0)) -> dict[int, dict[str, Any]]:
    results = {}
    for drain in drains:
        if drain != 10:
            set_drain(release, drain)

            def rolled(drain: int = drain) -> bool:
                pods = release.pods(f"llm.sdc.dev/localllm={llm}")
                hooks = [bool(p["spec"]["containers"][0].get("lifecycle")) for p in pods]
                return bool(pods) and hooks.count(drain > 0) == len(pods)

            wait_until("the engine pods rolled to the new setting", rolled, timeout=600, interval=2)
        pods = two_replicas(release, llm)
        hook = pods[0]["spec"]["containers"][0].get("lifecycle")
        if bool(hook) != (drain > 0):
            raise RuntimeError(f"the engine pods' preStop is {hook}, expected a {drain} s pause")
        model = release.kubectl.get("llm", llm, "-n", release.ns)["status"]["servedModelName"]
        results[drain] = scale_down_under_load(release, llm, model, 8000)
        print(f"drain {drain}s: {json.dumps(results[drain], default=str)}", flush=True)
    return results


def report(results: dict[int, dict[str, Any]]) -> str:
    rows = [
        [
            f"{drain} s" + (" (default)" if drain == 10 else " (off)" if drain == 0 else ""),
            r["requests"],
            r["failed"],
            "; ".join(f"{n}x {e}" for e, n in r["errors"]) or "-",
            f"{r['service_requests']} / {r['service_failed']}",
            "; ".join(f"{n}x {e}" for e, n in r["service_errors"]) or "-",
            r["victim_finished_after_mark"],
            f"{r['unpublished_after_mark_s']:.2f}",
            f"{r['gone_after_mark_s']:.1f}",
            r["load"],
        ]
        for drain, r in results.items()
    ]
    return "\n".join(
        [
            "## Scale-down with requests in flight (`benchmarks/scale_down_drain.py`)",
            "",
            f"Machine: {machine()}. sdc-runtime's tiny model at two replicas on the real node, {CLIENTS} clients "
            f"keeping streamed chats ({MAX_TOKENS} tokens) in flight through the in-cluster orchestrator and "
            f"{SERVICE_CLIENTS} straight at the LocalLLM's Service while "
            "`kubectl scale llm --replicas=1` removes one pod. Preset by the operator's SDC_ENGINE_DRAIN_SECONDS.",
            "",
            table(
                [
                    "preStop pause",
                    "requests",
                    "failed",
                    "errors",
                    "straight at the Service: requests / failed",
                    "their errors",
                    "answered by the leaving pod after its mark",
                    "unpublished after the mark (s)",
                    "pod gone after the mark (s)",
                    "load",
                ],
                rows,
            ),
            "",
        ]
    )


def main() -> int:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        print("scale_down_drain: skipped (no local cluster with its real node: `python hack/cluster.py up`)")
        return 0
    kubectl = Kubectl(kubeconfig)
    with tempfile.TemporaryDirectory(prefix="sdc-drain-hub-") as tmp:
        hub_root = prepare_hub(Path(tmp))
        release = new_release(kubectl, kubeconfig, "drain")
        try:
            release.install(hub_root)
            release.kubectl.apply(localllm("drain", release.ns, "transformers", TINY, replicas=1))
            results = measure(release, "drain")
        finally:
            release.uninstall()
    write_report("scale_down_drain", report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
