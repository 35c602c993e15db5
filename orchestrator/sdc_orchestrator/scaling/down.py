"""Scale models with spec.autoscaling: up on the engines' queues, down a step at a time after idle.

Up: when the requests waiting in the engines of a model's ready replicas (`vllm:num_requests_waiting`, read by
the routing scraper) exceed autoscaling.targetWaitingPerReplica per replica, to ceil(waiting / target), at
least one more, at most maxReplicas; then no other up-step for UP_WINDOW_S, so a replica still starting is
not asked for twice (its write would fail the test anyway: spec.replicas is ahead of what is published).

Down: after autoscaling.scaleDownDelaySeconds without a request.

Only LocalLLMs published with `autoscaling` are touched. A model is idle when no request of this orchestrator
(the chart runs one) is in flight on any of its replicas and none has started for the delay; the delay counts
from the latest of: a request started, a request seen in flight (each check, `interval_s`), the orchestrator's
start, and its own last write, so each step waits a
whole delay (the stabilization window: no flapping, and a restart never scales anything down at once). The
write is the same test-and-set as the scale from zero: from the replicas published ready to one less, so a
model someone else just scaled is left alone. Down to minReplicas; at 0 the model is published `unready`,
and the next request wakes it (waker.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.router import Router
from sdc_orchestrator.scaling.client import ScaleClient
from sdc_orchestrator.scaling.hold import scale_down_target, scale_up_target

log = logging.getLogger("sdc_orchestrator.scaling")
UP_WINDOW_S = 30.0


@dataclass(frozen=True)
class Step:
    namespace: str
    local_llm: str
    replicas: int
    target: int


@dataclass
class Autoscaler:
    registry: EndpointRegistry
    router: Router
    clock: Callable[[], float] = time.monotonic
    since: dict[str, float] = field(default_factory=dict)  # origin -> start of its current delay
    last_up: dict[str, float] = field(default_factory=dict)  # origin -> its last up-step

    def decide(self) -> list[Step]:
        """The writes due now; each restarts its model's delay."""
        now = self.clock()
        replicas: dict[str, list[str]] = {}
        busy: dict[str, bool] = {}
        waiting: dict[str, float] = {}
        for endpoint in self.registry.all("chat"):
            origin = endpoint.origin
            if origin is None or self.registry.autoscaling(origin) is None:
                continue
            replicas.setdefault(origin, []).append(endpoint.name)
            busy[origin] = busy.get(origin, False) or self.router.state(endpoint).in_flight > 0
            signals = self.router.replicas.scraper.signals(endpoint.name) if endpoint.metrics_url else None
            waiting[origin] = waiting.get(origin, 0.0) + (signals.waiting if signals else 0.0)
        steps = []
        for origin, names in replicas.items():
            auto = self.registry.autoscaling(origin)
            assert auto is not None  # noqa: S101 - filtered above
            if busy[origin]:
                self.since[origin] = now  # seen serving: the delay counts from (about) its last request's end
            namespace, _, name = origin.partition("/")
            up = scale_up_target(
                replicas=len(names),
                max_replicas=auto.max_replicas,
                waiting=waiting[origin],
                target_per_replica=auto.target_waiting,
            )
            if up is not None and now - self.last_up.get(origin, -UP_WINDOW_S) >= UP_WINDOW_S:
                self.last_up[origin] = self.since[origin] = now
                steps.append(Step(namespace, name, len(names), up))
                continue
            start = max(self.since.setdefault(origin, now), self.router.last_acquired.get(origin, 0.0))
            target = scale_down_target(
                replicas=len(names),
                min_replicas=auto.min_replicas,
                idle_since=None if busy[origin] else start,
                now=now,
                delay_s=auto.scale_down_delay_s,
                waiting=waiting[origin],
            )
            if target is not None:
                self.since[origin] = now
                steps.append(Step(namespace, name, len(names), target))
        for origin in set(self.since) - set(replicas):
            del self.since[origin]  # no longer published ready (at zero, or gone)
            self.last_up.pop(origin, None)
        return steps

    async def run(self, scale: ScaleClient, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for step in self.decide():
                await scale.set_replicas(step.namespace, step.local_llm, step.replicas, step.target)
