"""The engine loop: the bounded admission queue and the one thread that owns the model.

Why a thread: every step is blocking torch work; the event loop must keep serving HTTP meanwhile.
Admission is bounded: at most `max_queue` requests wait for a row; beyond that `admit` raises
`QueueFullError` (a 503 with `Retry-After`), so overload is visible to clients and load balancers
instead of an unbounded queue of timeouts.

Each turn of the loop takes waiting requests into the batch (up to `max_batch` rows and
`max_prefill_tokens` prompt tokens per turn), drops the rows that ended, and runs one decode step.
A batch whose cache padding cannot merge (`Batch.joinable` false) takes new rows only when empty.
"""

from __future__ import annotations

import logging
import queue
import threading

from sdc_runtime import metrics
from sdc_runtime.batch import Batch
from sdc_runtime.request import QueueFullError, Row

log = logging.getLogger("sdc_runtime.engine")


class Scheduler:
    def __init__(self, stats: metrics.ModelMetrics, *, max_batch: int, max_queue: int, max_prefill_tokens: int) -> None:
        self.stats = stats
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self._pending: queue.Queue[Row] = queue.Queue()
        self._waiting = 0  # submitted, not yet admitted (guarded by _lock)
        self._lock = threading.Lock()
        self.running = 0  # rows in the batch (read by tests and metrics)
        self.batch: Batch | None = None

    def admit(self, row: Row) -> None:
        """Any thread: queue a row for the batch, or raise `QueueFullError` when `max_queue` already wait."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"{self._waiting} requests are already waiting for a free row")
            self._waiting += 1
        self.stats.waiting.inc()
        self._pending.put(row)

    def start(self, batch: Batch, kv_capacity: int) -> None:
        """Run the loop over `batch` in a daemon thread; `kv_capacity`: the KV columns that count as full."""
        self.batch = batch
        threading.Thread(
            target=self._serve_forever, args=(batch, kv_capacity), name="sdc-generate", daemon=True
        ).start()

    def _take_waiting(self, free: int, block: bool) -> list[Row]:
        rows: list[Row] = []
        budget = self.max_prefill_tokens
        while len(rows) < free:
            try:
                row = self._pending.get(timeout=None) if block and not rows else self._pending.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._waiting -= 1
            self.stats.waiting.dec()
            if row.cancelled.is_set():
                row.push(None)
                continue
            rows.append(row)
            budget -= len(row.prompt_ids)
            if budget <= 0:
                break
        return rows

    def _serve_forever(self, batch: Batch, kv_capacity: int) -> None:
        import torch

        while True:
            newcomers: list[Row] = []
            try:
                with torch.inference_mode():
                    if not batch.rows or batch.joinable:
                        newcomers = self._take_waiting(self.max_batch - batch.live(), block=not batch.rows)
                        if newcomers:
                            batch.admit(newcomers)
                    batch.drop_finished()
                    if batch.rows:
                        batch.step()
            except Exception as err:  # a failed step fails its rows, never the worker
                log.exception("generation step failed")
                batch.fail_all(err, newcomers)
            self.running = batch.live()
            self.stats.running.set(self.running)
            self.stats.kv_usage.set(batch.kv_columns() / kv_capacity)
