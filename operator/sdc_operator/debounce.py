"""Coalesce bursts of work per key: many triggers, one run shortly after.

Why: a model coming up produces a burst of child events (claim bound, pod
scheduled, init container done, container ready, Deployment available), each
of which changes the derived status a little. Writing each intermediate status
costs API calls and etcd writes that nobody reads. A short delay (half a
second) turns the burst into one or two writes with the latest state, at the
price of reporting half a second later. One scheduler thread and a small pool,
not a timer thread per key: with hundreds of models, threads would pile up.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("sdc_operator.debounce")


class Debouncer:
    def __init__(self, delay_s: float, run: Callable[[Hashable], None], workers: int = 4) -> None:
        self.delay_s = delay_s
        self.run = run
        self._due: list[tuple[float, int, Hashable]] = []
        self._pending: set[Hashable] = set()
        self._counter = 0
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdc-debounce")
        threading.Thread(target=self._loop, name="sdc-debounce-scheduler", daemon=True).start()

    def trigger(self, key: Hashable) -> None:
        with self._cond:
            if key in self._pending:
                return
            self._pending.add(key)
            self._counter += 1
            heapq.heappush(self._due, (time.monotonic() + self.delay_s, self._counter, key))
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(timeout=(self._due[0][0] - time.monotonic()) if self._due else None)
                _, _, key = heapq.heappop(self._due)
                self._pending.discard(key)
            self._pool.submit(self._safe_run, key)

    def _safe_run(self, key: Hashable) -> None:
        try:
            self.run(key)
        except Exception:  # a failed run must not kill the scheduler; the next trigger retries
            log.exception("debounced run for %s failed", key)
