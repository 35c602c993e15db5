"""A model's first ready replica goes out at once (scale from zero); every other change stays coalesced.

The decisions (`triggers.first_replica_ready`, `triggers.serving_began`) and the debouncer's `trigger_now`
on a real event loop, timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest
from sdc_operator.debounce import Debouncer
from sdc_operator.triggers import first_replica_ready, serving_began

ENDPOINT = "http://m.ns.svc.cluster.local:8000/v1"


@pytest.mark.parametrize(
    ("shown", "deployment_ready", "expected"),
    [
        ({"phase": "Starting", "readyReplicas": 0}, 1, True),  # from zero: the first replica
        ({"phase": "Pending"}, 1, True),  # no count written yet
        (None, 2, True),  # never computed (a new LocalLLM): its first status goes out at once anyway
        ({"phase": "Starting", "readyReplicas": 0}, 0, False),  # still none ready
        ({"phase": "Ready", "readyReplicas": 1}, 2, False),  # 1 -> 2: coalesced as before
        ({"phase": "Degraded", "readyReplicas": 1}, 1, False),  # a Deployment event without a change
        ({"phase": "Ready", "readyReplicas": 2}, 0, False),  # going down: coalesced
        ({"readyReplicas": "junk"}, 1, True),  # an unreadable count is no count
    ],
)
def test_first_replica_ready_only_on_zero_to_one(
    shown: dict[str, Any] | None, deployment_ready: int, expected: bool
) -> None:
    assert first_replica_ready(shown, deployment_ready) is expected


def test_first_replica_waits_for_the_pod_index_to_show_a_ready_pod() -> None:
    """The Deployment's count can arrive before the pod's Ready event (and the other way round): a status
    written then would show phase Ready beside a download step still running. The later event fires it."""
    starting = {"phase": "Starting", "readyReplicas": 0}
    assert first_replica_ready(starting, 1, pod_ready=False) is False  # the Deployment's event came first
    assert first_replica_ready(starting, 0, pod_ready=True) is False  # the pod's event came first
    assert first_replica_ready(starting, 1, pod_ready=True) is True  # whichever came second


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"phase": "Starting"}, {"phase": "Ready", "endpoint": ENDPOINT}, True),
        (None, {"phase": "Degraded", "endpoint": ENDPOINT}, True),  # serving, one of two replicas ready
        ({"phase": "Pending"}, {"phase": "Ready"}, False),  # no endpoint: not published under `endpoints`
        ({"phase": "Ready", "endpoint": ENDPOINT}, {"phase": "Ready", "endpoint": ENDPOINT}, False),
        ({"phase": "Degraded", "endpoint": ENDPOINT}, {"phase": "Ready", "endpoint": ENDPOINT}, False),
        ({"phase": "Ready", "endpoint": ENDPOINT}, {"phase": "Pending"}, False),  # stopping: coalesced
        ({"phase": "Starting"}, {"phase": "Failed"}, False),
    ],
)
def test_serving_began_when_a_model_becomes_publishable(
    before: dict[str, Any] | None, after: dict[str, Any], expected: bool
) -> None:
    assert serving_began(before, after) is expected


def _recorder() -> tuple[list[tuple[str, float]], Any]:
    runs: list[tuple[str, float]] = []

    async def run(key: Hashable) -> None:
        runs.append((str(key), asyncio.get_running_loop().time()))

    return runs, run


def test_trigger_now_brings_a_pending_run_forward_and_runs_it_once() -> None:
    runs, run = _recorder()

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        debouncer = Debouncer(0.5, run, min_interval_s=2.0)
        start = loop.time()
        debouncer.trigger("k")  # pending for 0.5 s
        debouncer.trigger("other")
        await asyncio.sleep(0.05)
        debouncer.trigger_now("k")
        await asyncio.sleep(0.7)  # the cancelled timer must not run "k" a second time
        return start

    start = asyncio.run(scenario())
    mine = [t - start for k, t in runs if k == "k"]
    assert len(mine) == 1, runs
    assert mine[0] < 0.2, f"ran {mine[0]:.2f}s after the trigger, not at once"
    assert [k for k, _ in runs].count("other") == 1  # the other key keeps its delay and runs once


def test_trigger_now_ignores_the_minimum_interval() -> None:
    runs, run = _recorder()

    async def scenario() -> None:
        debouncer = Debouncer(0.02, run, min_interval_s=5.0)
        debouncer.trigger("k")
        await asyncio.sleep(0.1)  # ran once: the next plain trigger would wait 5 s
        debouncer.trigger("k")
        await asyncio.sleep(0.05)
        debouncer.trigger_now("k")
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    times = [t for _, t in runs]
    assert len(times) == 2, runs
    assert times[1] - times[0] < 0.5


def test_trigger_now_during_a_run_runs_again_at_once_with_the_newer_state() -> None:
    seen: list[tuple[int, float]] = []
    state = {"value": 0}

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        async def run(_: Hashable) -> None:
            seen.append((state["value"], loop.time()))
            if len(seen) == 1:
                await release.wait()  # a slow write, the API server busy

        debouncer = Debouncer(1.0, run)
        debouncer.trigger_now("k")
        await asyncio.sleep(0.02)
        state["value"] = 1
        debouncer.trigger_now("k")  # while the first run writes
        released = loop.time()
        release.set()
        await asyncio.sleep(0.2)
        assert debouncer.idle
        return released

    released = asyncio.run(scenario())
    assert [v for v, _ in seen] == [0, 1]
    assert seen[1][1] - released < 0.1, "the second run waited for the delay"
