"""Who waits for a model at zero, for how long, and when to ask for a replica: pure bookkeeping.

A request for a model the operator publishes as `unready` (at zero, or starting) is held rather than
refused. Bounds: at most `max_held` requests per model wait at once (the next gets 429), and none waits
longer than `max_wait_s` (then 503); both answers carry Retry-After, so nothing hangs.

Once per burst: the first held request of a model at zero asks for one replica; the others of the same
burst do not. The burst ends when the model is served (`served`): a later scale to zero starts a new
one. A request that finds the ask older than `max_wait_s` and the model still at zero asks again (the
write was lost, or someone scaled it back to zero), so a model is never stuck at zero while requests wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Burst:
    held: int = 0
    asked_at: float | None = None  # when this burst asked for a replica; None: not yet


@dataclass
class HoldBook:
    max_held: int
    max_wait_s: float
    clock: Callable[[], float] = time.monotonic
    bursts: dict[str, Burst] = field(default_factory=dict)

    def enter(self, model: str) -> bool:
        """Take a place in the model's queue; False when it is full (answer 429)."""
        burst = self.bursts.setdefault(model, Burst())
        if burst.held >= self.max_held:
            return False
        burst.held += 1
        return True

    def leave(self, model: str) -> None:
        burst = self.bursts.get(model)
        if burst is None:
            return
        burst.held = max(0, burst.held - 1)
        if burst.held == 0 and burst.asked_at is None:
            del self.bursts[model]

    def should_ask(self, model: str, at_zero: bool) -> bool:
        """Whether this request writes the scale: at zero, and no ask of this burst is still in its time."""
        if not at_zero:
            return False  # starting already (someone asked, or replicas > 0): only wait
        burst = self.bursts.setdefault(model, Burst())
        now = self.clock()
        if burst.asked_at is not None and now - burst.asked_at < self.max_wait_s:
            return False
        burst.asked_at = now
        return True

    def served(self, model: str) -> None:
        """A replica of the model is published ready: its burst is over."""
        burst = self.bursts.get(model)
        if burst is None:
            return
        burst.asked_at = None
        if burst.held == 0:
            del self.bursts[model]

    def held(self, model: str) -> int:
        burst = self.bursts.get(model)
        return burst.held if burst else 0

    def retry_after(self, model: str) -> int:
        """Seconds a refused client should wait: until this burst's ask is due to be served, at least 1."""
        burst = self.bursts.get(model)
        if burst is None or burst.asked_at is None:
            return max(1, math.ceil(self.max_wait_s / 10))
        left = self.max_wait_s - (self.clock() - burst.asked_at)
        return max(1, math.ceil(left)) if left > 0 else max(1, math.ceil(self.max_wait_s / 10))


def scale_down_target(
    *, replicas: int, min_replicas: int, idle_since: float | None, now: float, delay_s: float, waiting: float = 0.0
) -> int | None:
    """The replicas to ask for when a model is idle, or None to leave it: one step down (to min_replicas,
    0 included) once no request has come for `delay_s` and no engine has a request waiting. `idle_since`:
    when the model's last request ended (None: one is in flight). The delay is the stabilization window:
    a request inside it restarts it, so a model that gets a request every few minutes never flaps."""
    if replicas <= min_replicas or idle_since is None or waiting > 0:
        return None
    if now - idle_since < delay_s:
        return None
    return replicas - 1


def scale_up_target(*, replicas: int, max_replicas: int, waiting: float, target_per_replica: float) -> int | None:
    """The replicas to ask for when the engines' queues are long, or None: enough that the requests waiting
    (the sum of `vllm:num_requests_waiting` over the model's ready replicas) come to at most
    `target_per_replica` each (the HPA's formula, ceil(waiting / target)), at least one more, at most
    `max_replicas`. From zero is the waker's job (a held request), not this."""
    if replicas <= 0 or replicas >= max_replicas or waiting <= replicas * target_per_replica:
        return None
    return min(max_replicas, max(replicas + 1, math.ceil(waiting / target_per_replica)))
