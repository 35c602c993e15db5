"""The hand-off of a row's output from the scheduler thread to the event loop that awaits it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque


class Outbox:
    """Hands a row's output from the scheduler thread to its event loop, one wake-up per batch of items.

    Waking an event loop from another thread costs a self-pipe write, a loop iteration and a GIL
    hand-off. The scheduler thread only appends; it wakes the loop when no wake-up is pending yet,
    and the reader takes everything that piled up since. So a reader that keeps up gets each token as
    it comes, one that falls behind gets them joined, and the decode thread never waits on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[str | BaseException | None] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._ready = asyncio.Event()

    def put(self, item: str | BaseException | None) -> None:
        """Scheduler thread: queue an item; wake the loop unless a wake-up is already on its way."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> list[str | BaseException | None]:
        """Event loop: everything queued so far, waiting for at least one item."""
        while True:
            with self._lock:
                items = list(self._items)
                self._items.clear()
                self._wake_pending = False
            if items:
                return items
            # No await between the unlock and clear(): a wake-up scheduled after the unlock runs
            # on this loop only once we wait, so it cannot be lost.
            self._ready.clear()
            await self._ready.wait()
