"""Would releasing held requests in waves get the first token sooner? (#24: bounded release, measured.)

    python hack/cluster.py up          # the real node
    python benchmarks/release_waves.py [rounds]

When a model comes up from zero the orchestrator releases every held request at once onto the one fresh
replica. This measures the alternative on one warm sdc-runtime replica behind the chart's in-cluster
orchestrator: 64 streamed chats released by the client all at once, in waves at fixed gaps (the first
32 being sdc-runtime's batch bound), or in waves each sent when the previous wave's first token arrives.
Per release: the first token, the median first token and the last answer, from the first request sent.
Not in `make bench` (a one-off decision; REPORT.md keeps its figures). Skips without the real node.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.real_node import (
    Release,
    cluster_kubeconfig,
    load_average,
    localllm,
    new_release,
)
from benchmarks.scale_from_zero import PROMPT, RELEASE_VALUES, TINY, prepare_hub
from tests.conftest import Kubectl, wait_until

N = 64
# (wave size, gap in seconds); a gap of None: the next wave goes when the previous one's first token arrives.
RELEASES: list[tuple[int, float | None]] = [(N, 0.0), (32, 0.3), (16, 0.15), (8, 0.1), (4, 0.05), (16, None), (8, None)]


async def one(client: httpx.AsyncClient, release: Release, model: str, wait: asyncio.Event, then: asyncio.Event) -> Any:
    """One streamed chat sent once `wait` is set; sets `then` at its first token (or its end)."""
    await wait.wait()
    first: float | None = None
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "stream": True}
    try:
        async with client.stream(
            "POST", f"{release.base}/v1/chat/completions", json=body, headers=release.auth
        ) as resp:
            async for line in resp.aiter_lines():
                if first is None and line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                        first = time.time()
                        then.set()
            return resp.status_code, first, time.time()
    finally:
        then.set()


async def burst(release: Release, model: str, wave: int, gap: float | None) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=N + 8, max_keepalive_connections=N + 8)
    gates = [asyncio.Event() for _ in range(N // wave + 1)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=30), limits=limits) as client:
        t0 = time.time()
        # With fixed gaps a first token opens nothing: each request's `then` is an event of its own.
        tasks = [
            asyncio.create_task(
                one(client, release, model, gates[i // wave], gates[i // wave + 1] if gap is None else asyncio.Event())
            )
            for i in range(N)
        ]
        gates[0].set()
        if gap is not None:  # fixed gaps: the gates open on a timer, whatever the first tokens do
            for gate in gates[1:]:
                await asyncio.sleep(gap)
                gate.set()
        answers = await asyncio.gather(*tasks)
    firsts = sorted((first or done) - t0 for status, first, done in answers if status == 200)
    if not firsts:
        raise RuntimeError(f"no request of the burst was answered: statuses {sorted({a[0] for a in answers})}")
    return {
        "wave": wave,
        "gap": "first token" if gap is None else gap,
        "ok": len(firsts),
        "first": round(firsts[0], 3),
        "median_first": round(statistics.median(firsts), 3),
        "all_done": round(max(done for _, _, done in answers) - t0, 3),
        "load": load_average(),
    }


def served(release: Release, name: str) -> str | None:
    """The model's served name once it is Ready, else None."""
    status = release.kubectl.get("llm", name, "-n", release.ns).get("status", {})
    return str(status["servedModelName"]) if status.get("phase") == "Ready" else None


def main(argv: list[str]) -> int:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        print("release_waves: skipped (no local cluster with its real node: `python hack/cluster.py up`)")
        return 0
    rounds = int(argv[0]) if argv else 3
    with tempfile.TemporaryDirectory(prefix="sdc-waves-hub-") as tmp:
        hub_root = prepare_hub(Path(tmp))
        release = new_release(Kubectl(kubeconfig), kubeconfig, "waves")
        release.extra_values = RELEASE_VALUES
        try:
            release.install(hub_root)
            release.kubectl.apply(localllm("warm", release.ns, "transformers", TINY, replicas=1))
            model = str(wait_until("the replica Ready", lambda: served(release, "warm"), timeout=600, interval=1))
            time.sleep(3)  # the orchestrator's watch has the replica
            asyncio.run(burst(release, model, 8, 0.0))  # the replica's first requests, not measured
            for i in range(rounds):
                for wave, gap in RELEASES:
                    time.sleep(2)
                    print(json.dumps({"round": i, **asyncio.run(burst(release, model, wave, gap))}), flush=True)
        finally:
            release.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
