"""Pick an endpoint, call it, and fail over: the request path's policy.

Weights shift traffic between endpoints of one provider (and, for `auto`,
across providers); in-flight requests divide an endpoint's weight, so a slow
backend gets less new work. Attempts: the chosen provider's endpoints first,
then each provider in LLM_FALLBACK order. Timeouts, connection errors, 429 and
5xx cool the endpoint down for a few seconds and move on; any other 4xx is the
client's fault and goes back to the client unchanged. Streaming requests only
retry before the first byte has been sent.

Accounting lives in one place, `Slot`: every attempt takes one from
`Router.acquire` and gives it back exactly once, as `ok` (resets failures),
`failed` (the backend's fault: cool it down) or `abandoned` (the client left,
was cancelled, or sent a request any backend would refuse: the backend is not
to blame, so only the in-flight count drops). A slot nobody released is
released as abandoned when its request ends (`Attempts.close`), so no path,
including a cancellation before a stream's first byte, leaks an in-flight count.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sdc_orchestrator import sticky
from sdc_orchestrator.backends import Endpoint
from sdc_orchestrator.routing import replicas
from sdc_orchestrator.routing.policy import Hint, ReplicaPolicy


class UpstreamError(Exception):
    """A backend failed; `retryable` says whether another endpoint may succeed."""

    def __init__(
        self,
        endpoint: Endpoint,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        timeout: bool = False,
        body: object | None = None,
        own: bool = False,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.retryable = retryable
        self.timeout = timeout
        self.body = body
        self.own = own  # `body` was written by the orchestrator (names no backend internals), not the backend


def classify_status(status: int) -> bool:
    """Whether an HTTP status from a backend is worth another endpoint."""
    return status == 429 or status >= 500 or status in (404, 408)


@dataclass
class EndpointHealth:
    in_flight: int = 0
    cooled_until: float = 0.0
    failures: int = 0


@dataclass
class Router:
    cooldown_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    health: dict[str, EndpointHealth] = field(default_factory=dict)
    replicas: ReplicaPolicy = field(default_factory=ReplicaPolicy)
    # When a request last went to each published LocalLLM (`origin`): its idle time, for scaling/down.py.
    last_acquired: dict[str, float] = field(default_factory=dict)

    def _now(self) -> float:
        return self.clock()

    def state(self, endpoint: Endpoint) -> EndpointHealth:
        return self.health.setdefault(endpoint.name, EndpointHealth())

    def is_cooling(self, endpoint: Endpoint) -> bool:
        return self.state(endpoint).cooled_until > self._now()

    def pick(
        self, candidates: Sequence[Endpoint], exclude: set[str], user: str | None = None, hint: Hint | None = None
    ) -> Endpoint | None:
        """Weighted random choice among warm replica sets (models), weight divided by (1 + in-flight per
        replica); then the replica, by the engine-aware policy (routing/policy.py).

        A named user always gets the same model while it is warm (sticky.py). A set of one endpoint (the
        seed's variables, Gemini, an old one-entry-per-LocalLLM document) is chosen exactly as before.
        """
        pool = [e for e in candidates if e.name not in exclude and e.weight > 0 and not self.is_cooling(e)]
        if not pool:
            # Everything is cooling: trying a cooled endpoint beats failing without a try.
            pool = [e for e in candidates if e.name not in exclude and e.weight > 0]
        if not pool:
            return None
        sets = replicas.group(pool)
        chosen: replicas.ReplicaSet | None
        if user:
            chosen = sticky.pick(user, sets)
        else:
            scores = [s.weight / (1 + sum(self.state(e).in_flight for e in s.replicas) / len(s.replicas)) for s in sets]
            chosen = self.rng.choices(sets, weights=scores, k=1)[0]
        if chosen is None:
            return None
        members: Sequence[Endpoint] = chosen.replicas
        origins = chosen.origins()
        if len(origins) > 1 and len({group[0].weight for group in origins.values()}) > 1:
            # LocalLLMs of one model with different weights (a canary): the split the weights ask for first.
            names = list(origins)
            members = origins[self.rng.choices(names, weights=[origins[n][0].weight for n in names], k=1)[0]]
        if len(members) == 1:
            return members[0]
        return self.replicas.choose(members, lambda e: self.state(e).in_flight, hint or Hint())

    def plan_groups(
        self, provider: str, by_provider: dict[str, list[Endpoint]], fallbacks: list[str]
    ) -> list[list[Endpoint]]:
        """The groups tried in order: the chosen provider (all providers for auto), then the fallbacks."""
        if provider == "auto":
            first = [e for group in by_provider.values() for e in group]
        else:
            # Named explicitly, a provider answers even when its `auto` share is 0 (GEMINI_WEIGHT=0):
            # weights then only split traffic among its endpoints.
            first = by_provider.get(provider, [])
            if first and all(e.weight <= 0 for e in first):
                first = [_with_weight(e) for e in first]
        groups = [first]
        for name in fallbacks:
            if name != provider:
                groups.append([e if e.weight > 0 else _with_weight(e) for e in by_provider.get(name, [])])
        return groups

    def candidates(
        self, groups: list[list[Endpoint]], max_attempts: int, user: str | None = None, hint: Hint | None = None
    ) -> Iterator[Endpoint]:
        """Endpoints to try, in order: up to `max_attempts` of the first group, then each fallback's.

        Lazy: each one is picked when the previous attempt failed, on the health and load of that moment.
        """
        tried: set[str] = set()
        for index, group in enumerate(groups):
            per_group = max_attempts if index == 0 else len(group)
            for _ in range(per_group):
                endpoint = self.pick(group, tried, user, hint)
                if endpoint is None:
                    break
                tried.add(endpoint.name)
                yield endpoint

    def acquire(self, endpoint: Endpoint) -> Slot:
        self.state(endpoint).in_flight += 1
        if endpoint.origin is not None:
            self.last_acquired[endpoint.origin] = self._now()
        return Slot(self, endpoint)

    def _release(self, endpoint: Endpoint, outcome: Outcome) -> bool:
        """Record an outcome; returns True when the endpoint was just cooled down."""
        state = self.state(endpoint)
        state.in_flight = max(0, state.in_flight - 1)
        if outcome == "ok":
            state.failures = 0
        if outcome != "failed":
            return False
        state.failures += 1
        state.cooled_until = self._now() + self.cooldown_s
        return True


Outcome = Literal["ok", "failed", "abandoned"]


@dataclass
class Slot:
    """One attempt's claim on an endpoint; `release` counts once, later calls are no-ops."""

    router: Router
    endpoint: Endpoint
    outcome: Outcome | None = None

    @property
    def open(self) -> bool:
        return self.outcome is None

    def release(self, outcome: Outcome) -> bool:
        """Returns True when this release cooled the endpoint down."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        return self.router._release(self.endpoint, outcome)


def by_provider(endpoints: Iterable[Endpoint], skip: frozenset[str] = frozenset()) -> dict[str, list[Endpoint]]:
    """Endpoints grouped by provider, in order; `skip`: providers that do not serve the route."""
    grouped: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        if endpoint.provider not in skip:
            grouped.setdefault(endpoint.provider, []).append(endpoint)
    return grouped


def _with_weight(endpoint: Endpoint) -> Endpoint:
    """A fallback with routing weight 0 still serves as a fallback."""
    return dataclasses.replace(endpoint, weight=1)
