"""Coalesce bursts of work per key on the event loop: many triggers, one run shortly after.

Why: a model coming up produces a burst of child events (claim bound, pod
scheduled, init container done, container ready, Deployment available), each
of which changes the derived status a little. Writing each intermediate status
costs API calls and etcd writes that nobody reads. A short delay (half a
second) turns the burst into one or two writes with the latest state, at the
price of reporting half a second later. Under load the changes of one object
spread over seconds; a minimum interval between one key's runs (status writes:
`SDC_STATUS_MIN_INTERVAL_S`) collapses those too.

Everything runs on the operator's one event loop (no threads, no locks): a
trigger schedules a timer unless one is pending for the key, and a key never
runs twice at once, so a run always sees the latest state and an older run
cannot overwrite a newer one.

`trigger_now` skips the wait for the one change somebody is waiting on: a
model's first ready replica, with requests held for it (scale from zero). A
pending timer is cancelled and the key runs at once (or right after its
current run), with the same latest state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("sdc_operator.debounce")


def run_delay(now: float, last_start: float | None, delay_s: float, min_interval_s: float) -> float:
    """Seconds until a key triggered `now` runs: the coalescing delay, and no sooner than `min_interval_s`
    after the key's last run started (a model whose state changes every second under load gets one write
    per interval with the latest state, not one per change)."""
    if last_start is None:
        return delay_s
    return max(delay_s, last_start + min_interval_s - now)


class Debouncer:
    def __init__(self, delay_s: float, run: Callable[[Hashable], Awaitable[None]], min_interval_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.min_interval_s = min_interval_s
        self.run = run
        self._last_start: dict[Hashable, float] = {}
        self._pending: dict[Hashable, asyncio.TimerHandle] = {}
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._again: set[Hashable] = set()
        self._again_now: set[Hashable] = set()  # runs again at once, not after the delay
        self._tasks: set[asyncio.Task[None]] = set()

    def trigger(self, key: Hashable) -> None:
        """Run `run(key)` once after the delay, however often this is called meanwhile."""
        if key in self._running:  # runs again when the current one ends, with the newer state
            self._again.add(key)
            return
        if key in self._pending:
            return
        loop = asyncio.get_running_loop()
        last = self._last_start.get(key)
        delay = run_delay(loop.time(), last, self.delay_s, self.min_interval_s)
        self._pending[key] = loop.call_later(delay, self._start, key)

    def trigger_now(self, key: Hashable) -> None:
        """Run `run(key)` at once, without the delay or the minimum interval (a pending run is brought
        forward, a current one is followed at once by another with the newer state)."""
        if key in self._running:
            self._again.add(key)
            self._again_now.add(key)
            return
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._start(key)

    def _start(self, key: Hashable) -> None:
        self._pending.pop(key, None)
        now = asyncio.get_running_loop().time()
        if self.min_interval_s > 0:
            self._last_start[key] = now
            if len(self._last_start) > 2 * (len(self._pending) + len(self._running)) + 1024:
                # Forget keys whose interval is over (deleted objects among them): the map stays small.
                horizon = now - self.min_interval_s
                self._last_start = {k: t for k, t in self._last_start.items() if t > horizon}
        task = asyncio.get_running_loop().create_task(self._safe_run(key))
        self._running[key] = task

    async def _safe_run(self, key: Hashable) -> None:
        try:
            await self.run(key)
        except Exception:  # a failed run must not stop later ones; the next trigger retries
            log.exception("debounced run for %s failed", key)
        finally:
            self._running.pop(key, None)
            if key in self._again:
                self._again.discard(key)
                if key in self._again_now:
                    self._again_now.discard(key)
                    self.trigger_now(key)
                else:
                    self.trigger(key)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._running
