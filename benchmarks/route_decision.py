"""What one routing decision costs: `Router.pick` over 8 (and 32) replicas of one model, as in the request path.

Each decision renders a RAG-sized prompt (a 1,900-character document as the
system message, a question), hashes its blocks, looks them up in every
replica's prefix index (warmed with 64 documents), scores every replica from
fresh engine readings and records the choice. Timed with perf_counter_ns
(and the thread's CPU time) around the whole of it (the hint and the pick),
20,000 decisions after 2,000 of warm-up; the target is 1 ms at p99 with 8
replicas.
Run: `python benchmarks/route_decision.py`.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "orchestrator"))
from sdc_orchestrator.backends import Endpoint
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing.policy import ReplicaPolicy, hint
from sdc_orchestrator.routing.scrape import Scraper, Signals

from benchmarks.common import machine, percentile, table, write_report
from benchmarks.engine_sim import documents, questions

DECISIONS = 20_000
WARM_UP = 2_000


def measure(n: int, rng: random.Random) -> tuple[float, float, float, float]:
    scraper = Scraper(clock=lambda: 0.0)
    replicas = [
        Endpoint(f"sdc/gemma/pod-{i}", "vllm", f"http://10.0.0.{i}:8000/v1", "gemma", 100, namespace="sdc",
                 metrics_url=f"http://10.0.0.{i}:8000/metrics", origin="sdc/gemma")
        for i in range(n)
    ]  # fmt: skip
    for e in replicas:  # fresh readings from every engine
        scraper._latest[e.name] = Signals(rng.randint(0, 4), rng.randint(0, 8), rng.random(), 1e6, 5e5, 0.0)
    router = Router(rng=rng, replicas=ReplicaPolicy(scraper=scraper, rng=rng))
    docs, qs = documents(64, rng), questions()
    times: list[float] = []
    cpu_times: list[float] = []  # the thread's own CPU time: what the decision costs, without the OS's preemptions
    for i in range(WARM_UP + DECISIONS):
        messages = [{"role": "system", "content": rng.choice(docs)}, {"role": "user", "content": rng.choice(qs)}]
        started, cpu = time.perf_counter_ns(), time.thread_time_ns()
        endpoint = router.pick(replicas, set(), None, hint(messages))
        elapsed, cpu = time.perf_counter_ns() - started, time.thread_time_ns() - cpu
        assert endpoint is not None  # noqa: S101
        router.acquire(endpoint).release("ok")
        if i >= WARM_UP:
            times.append(elapsed / 1e6)
            cpu_times.append(cpu / 1e6)
    return percentile(times, 50), percentile(times, 99), percentile(cpu_times, 50), percentile(cpu_times, 99)


def main() -> int:
    rng = random.Random(11)
    rows = [[n, *measure(n, rng)] for n in (8, 32)]
    text = "\n".join(
        [
            "## Routing decision cost",
            "",
            f"`python benchmarks/route_decision.py` ({machine()}): the prompt's hint and `Router.pick` over n "
            f"replicas with warmed prefix indexes and fresh engine readings, {DECISIONS} decisions. Target: p99 "
            "<= 1 ms at 8 replicas.",
            "",
            table(
                ["replicas", "wall p50 ms", "wall p99 ms", "CPU p50 ms", "CPU p99 ms"],
                [[n, *(round(v, 4) for v in values)] for n, *values in rows],
            ),
            "",
            "Wall time includes the OS's preemptions on a shared machine (load average at the end of the run: "
            f"{os.getloadavg()[0]:.1f}); CPU time is the thread's own, what a decision costs.",
            "",
        ]
    )
    print(text)
    write_report("route_decision", text)
    return 0 if rows[0][4] <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
