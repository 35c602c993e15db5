"""Pick an endpoint, call it, and fail over: the request path's policy.

Weights shift traffic between endpoints of one provider (and, for `auto`,
across providers); in-flight requests divide an endpoint's weight, so a slow
backend gets less new work. Attempts: the chosen provider's endpoints first,
then each provider in LLM_FALLBACK order. Timeouts, connection errors, 429 and
5xx cool the endpoint down for a few seconds and move on; any other 4xx is the
client's fault and goes back to the client unchanged. Streaming requests only
retry before the first byte has been sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sdc_orchestrator import sticky
from sdc_orchestrator.backends import Endpoint


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
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.retryable = retryable
        self.timeout = timeout
        self.body = body


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

    def _now(self) -> float:
        return self.clock()

    def state(self, endpoint: Endpoint) -> EndpointHealth:
        return self.health.setdefault(endpoint.name, EndpointHealth())

    def is_cooling(self, endpoint: Endpoint) -> bool:
        return self.state(endpoint).cooled_until > self._now()

    def pick(self, candidates: Sequence[Endpoint], exclude: set[str], user: str | None = None) -> Endpoint | None:
        """Weighted random choice among warm endpoints, weight divided by (1 + in-flight).

        A named user always gets the same endpoint while it is warm (sticky.py).
        """
        pool = [e for e in candidates if e.name not in exclude and e.weight > 0 and not self.is_cooling(e)]
        if not pool:
            # Everything is cooling: trying a cooled endpoint beats failing without a try.
            pool = [e for e in candidates if e.name not in exclude and e.weight > 0]
        if not pool:
            return None
        if user:
            return sticky.pick(user, pool)
        scores = [e.weight / (1 + self.state(e).in_flight) for e in pool]
        return self.rng.choices(pool, weights=scores, k=1)[0]

    def plan_groups(
        self, provider: str, by_provider: dict[str, list[Endpoint]], fallbacks: list[str]
    ) -> list[list[Endpoint]]:
        """The groups tried in order: the chosen provider (all providers for auto), then the fallbacks."""
        if provider == "auto":
            first = [e for group in by_provider.values() for e in group]
        else:
            first = by_provider.get(provider, [])
        groups = [first]
        for name in fallbacks:
            if name != provider:
                groups.append([e if e.weight > 0 else _with_weight(e) for e in by_provider.get(name, [])])
        return groups

    def started(self, endpoint: Endpoint) -> None:
        self.state(endpoint).in_flight += 1

    def finished(self, endpoint: Endpoint, ok: bool) -> bool:
        """Record an outcome; returns True when the endpoint was just cooled down."""
        state = self.state(endpoint)
        state.in_flight = max(0, state.in_flight - 1)
        if ok:
            state.failures = 0
            return False
        state.failures += 1
        state.cooled_until = self._now() + self.cooldown_s
        return True


def _with_weight(endpoint: Endpoint) -> Endpoint:
    """A fallback with routing weight 0 still serves as a fallback."""
    return Endpoint(
        endpoint.name, endpoint.provider, endpoint.base_url, endpoint.model, 1, endpoint.role, endpoint.api_key
    )
