"""Scale from zero and back, the pure decisions: who is held, who asks for a replica, when to scale down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing.scrape import Signals
from sdc_orchestrator.scaling.down import Autoscaler, Step
from sdc_orchestrator.scaling.hold import HoldBook, scale_down_target, scale_up_target
from sdc_orchestrator.settings import OrchestratorSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: (time, action, model, at_zero) -> the answer. Actions: enter (True: held, False: 429),
# ask (True: this request writes the scale), leave, served (a replica is published ready).
BURSTS = [
    (
        "one burst asks once, however many wait",
        [
            (0, "enter", "a", True, True),
            (0, "ask", "a", True, True),
            (0, "enter", "a", True, True),
            (0, "ask", "a", True, False),
            (4, "leave", "a", True, None),
            (5, "enter", "a", True, True),
            (5, "ask", "a", True, False),  # still at zero in the published file: the ask is on its way
        ],
    ),
    (
        "bounded per model: the third waits not, another model does",
        [
            (0, "enter", "a", True, True),
            (0, "enter", "a", True, True),
            (0, "enter", "a", True, False),
            (0, "enter", "b", True, True),
            (0, "ask", "b", True, True),
        ],
    ),
    (
        "served ends the burst: the next scale to zero asks again",
        [
            (0, "enter", "a", True, True),
            (0, "ask", "a", True, True),
            (3, "served", "a", True, None),
            (3, "leave", "a", True, None),
            (400, "enter", "a", True, True),
            (400, "ask", "a", True, True),
        ],
    ),
    (
        "an ask older than the longest wait, still at zero, is made again (lost or undone)",
        [
            (0, "enter", "a", True, True),
            (0, "ask", "a", True, True),
            (0, "leave", "a", True, None),
            (30, "enter", "a", True, True),
            (30, "ask", "a", True, False),
            (61, "ask", "a", True, True),
        ],
    ),
    (
        "starting (replicas > 0): wait, never write",
        [
            (0, "enter", "a", False, True),
            (0, "ask", "a", False, False),
        ],
    ),
    (
        "leaving frees a place",
        [
            (0, "enter", "a", True, True),
            (0, "enter", "a", True, True),
            (0, "leave", "a", True, None),
            (0, "enter", "a", True, True),
            (0, "enter", "a", True, False),
        ],
    ),
]


@pytest.mark.parametrize(("case", "steps"), BURSTS, ids=[c for c, _ in BURSTS])
def test_hold_book(case: str, steps: list[tuple[float, str, str, bool, bool | None]]) -> None:
    clock = Clock()
    book = HoldBook(max_held=2, max_wait_s=60, clock=clock)
    for i, (at, action, model, at_zero, want) in enumerate(steps):
        clock.now = at
        got: bool | None
        if action == "enter":
            got = book.enter(model)
        elif action == "ask":
            got = book.should_ask(model, at_zero)
        elif action == "leave":
            book.leave(model)
            got = None
        else:
            book.served(model)
            got = None
        assert got == want, f"{case}: step {i} ({action} at {at})"


def test_retry_after_counts_down_the_ask_and_is_never_zero() -> None:
    clock = Clock()
    book = HoldBook(max_held=1, max_wait_s=60, clock=clock)
    assert book.retry_after("a") == 6  # no ask yet: a tenth of the longest wait
    book.enter("a")
    book.should_ask("a", True)
    clock.now = 45
    assert book.retry_after("a") == 15
    clock.now = 59.5
    assert book.retry_after("a") == 1
    clock.now = 100
    assert book.retry_after("a") == 6
    book.leave("a")
    book.served("a")
    assert book.bursts == {}  # nothing kept once a burst is over and nobody waits


@pytest.mark.parametrize(
    ("case", "replicas", "min_replicas", "idle_since", "now", "waiting", "want"),
    [
        ("idle past the delay: one step down", 3, 0, 0.0, 301.0, 0.0, 2),
        ("idle past the delay at one, min 0: to zero", 1, 0, 0.0, 300.0, 0.0, 0),
        ("inside the window: stay (no flapping)", 1, 0, 0.0, 299.0, 0.0, None),
        ("a request in flight: stay", 2, 0, None, 1000.0, 0.0, None),
        ("engines still have requests waiting: stay", 2, 0, 0.0, 1000.0, 1.0, None),
        ("at the floor: stay", 1, 1, 0.0, 1000.0, 0.0, None),
        ("already at zero: stay", 0, 0, 0.0, 1000.0, 0.0, None),
    ],
)
def test_scale_down_target(
    case: str, replicas: int, min_replicas: int, idle_since: float | None, now: float, waiting: float, want: int | None
) -> None:
    got = scale_down_target(
        replicas=replicas, min_replicas=min_replicas, idle_since=idle_since, now=now, delay_s=300, waiting=waiting
    )
    assert got == want, case


def test_scale_down_steps_one_at_a_time_each_after_a_whole_delay(tmp_path: Path) -> None:
    """Three replicas of an autoscaled model, one without autoscaling: the clock decides, a request resets it."""
    entries = [
        {"name": "sdc/a", "namespace": "sdc", "localLLM": "a", "replica": f"a-{i}", "runtime": "vllm", "model": "a",
         "baseUrl": f"http://10.0.0.{i}:8000/v1", "autoscaling": {"minReplicas": 0, "scaleDownDelaySeconds": 60}}
        for i in range(3)
    ] + [{"name": "sdc/b", "namespace": "sdc", "localLLM": "b", "runtime": "vllm", "model": "b", "baseUrl": "http://b/v1"}]  # fmt: skip
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    clock = Clock()
    router = Router(clock=clock)
    down = Autoscaler(
        EndpointRegistry(OrchestratorSettings(sdc_endpoints_file=path, sdc_namespace="sdc")), router, clock
    )
    assert down.decide() == []  # the start begins the delay: a restart scales nothing down at once
    clock.now = 59
    assert down.decide() == []
    clock.now = 60
    assert down.decide() == [Step("sdc", "a", 3, 2)]
    clock.now = 100
    assert down.decide() == []  # the write restarted the delay: the stabilization window
    endpoint = next(e for e in down.registry.all() if e.origin == "sdc/a")
    slot = router.acquire(endpoint)  # a request: in flight, then its start restarts the delay
    clock.now = 500
    assert down.decide() == []
    slot.release("ok")
    clock.now = 559
    assert down.decide() == []
    clock.now = 560
    assert down.decide() == [Step("sdc", "a", 3, 2)]  # 3 still published ready: the step is from what is seen


def test_unready_entries_are_read_for_this_release_only(tmp_path: Path) -> None:
    """`unready` as routing reads `endpoints`: this release's namespaces and pool; another namespace's model is
    named `<namespace>/<model>`; an entry it cannot use (no model, unknown runtime) is skipped, not fatal."""
    base = {"runtime": "transformers", "model": "tiny", "role": "chat", "replicas": 0, "atZero": True}
    unready = [
        {**base, "name": "sdc/tiny", "namespace": "sdc", "localLLM": "tiny"},
        {**base, "name": "team-b/tiny", "namespace": "team-b", "localLLM": "tiny"},
        {**base, "name": "team-c/tiny", "namespace": "team-c", "localLLM": "tiny"},
        {**base, "name": "sdc/gold", "namespace": "sdc", "localLLM": "gold", "model": "gold", "pool": "gold"},
        {**base, "name": "sdc/odd", "namespace": "sdc", "localLLM": "odd", "model": None},
        {**base, "name": "sdc/new", "namespace": "sdc", "localLLM": "new", "model": "new", "runtime": "tgi"},
        {**base, "name": "sdc/off", "namespace": "sdc", "localLLM": "off", "model": "off", "weight": 0},
    ]
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": [], "unready": unready}))
    registry = EndpointRegistry(
        OrchestratorSettings(
            sdc_endpoints_file=path, sdc_namespace="sdc", sdc_route_namespaces="team-b", llm_service_type="none"
        )
    )
    found = {
        m: (d.name if (d := registry.dormant(m)) else None)
        for m in ("tiny", "team-b/tiny", "team-c/tiny", "gold", "new", "off")
    }
    assert found == {
        "tiny": "sdc/tiny",
        "team-b/tiny": "team-b/tiny",
        "team-c/tiny": None,
        "gold": None,
        "new": None,
        "off": None,  # routing.weight 0: turned off, not woken
    }
    assert registry.all() == []  # nothing routable until a replica is published under `endpoints`


@pytest.mark.parametrize(
    ("case", "replicas", "waiting", "want"),
    [
        ("queues within the target: stay", 2, 8.0, None),
        ("just over: one more", 2, 9.0, 3),
        ("far over: ceil(waiting / target), capped at max", 1, 100.0, 4),
        ("at max: stay", 4, 100.0, None),
        ("at zero: the waker's job", 0, 100.0, None),
    ],
)
def test_scale_up_target(case: str, replicas: int, waiting: float, want: int | None) -> None:
    assert scale_up_target(replicas=replicas, max_replicas=4, waiting=waiting, target_per_replica=4) == want, case


def test_long_queues_scale_up_once_per_window_and_hold_the_scale_down(tmp_path: Path) -> None:
    entries = [
        {"name": "sdc/a", "namespace": "sdc", "localLLM": "a", "replica": f"a-{i}", "runtime": "vllm", "model": "a",
         "baseUrl": f"http://10.0.0.{i}:8000/v1", "metricsUrl": f"http://10.0.0.{i}:8000/metrics",
         "autoscaling": {"minReplicas": 0, "maxReplicas": 4, "targetWaitingPerReplica": 2, "scaleDownDelaySeconds": 60}}
        for i in range(2)
    ]  # fmt: skip
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    clock = Clock()
    router = Router(clock=clock)
    settings = OrchestratorSettings(sdc_endpoints_file=path, sdc_namespace="sdc", llm_service_type="none")
    scaler = Autoscaler(EndpointRegistry(settings), router, clock)

    def queues(*waiting: float) -> None:
        for i, value in enumerate(waiting):
            router.replicas.scraper._latest[f"sdc/a/a-{i}"] = Signals(value, 0, 0, 0, 0, time.monotonic())

    queues(3, 2)  # 5 waiting over 2 replicas, 2 each wanted: 3 replicas
    assert scaler.decide() == [Step("sdc", "a", 2, 3)]
    clock.now = 29
    assert scaler.decide() == []  # the new replica is starting: no second ask inside the window
    clock.now = 30
    queues(9, 9)
    assert scaler.decide() == [Step("sdc", "a", 2, 4)]  # capped at maxReplicas
    queues(1, 0)
    clock.now = 1000
    assert scaler.decide() == []  # idle but a request still waits in an engine: no step down
    queues(0, 0)
    assert scaler.decide() == [Step("sdc", "a", 2, 1)]
