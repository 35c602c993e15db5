"""Hold a request for a model at zero until a replica is published ready, asking for one once per burst.

Upstream.groups calls `hold` when no ready endpoint serves the requested model but the operator publishes
it as `unready` (backends.Dormant). The request waits (bounded: hold.py) for the published document, which
the operator rewrites when the new pod is Ready: woken at once by the API watch's next document
(`EndpointRegistry.changed`), else at its next poll of the mounted file; then it is routed as any other. A
stream is opened at once with SSE comments (`: ...`) every few seconds while it waits (`keep_alive`), so
proxies and clients do not time out; a stream that then cannot be served ends with an error event. If the orchestrator
restarts while holding, its connections close: clients get an error, never a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import Gauge

from sdc_orchestrator import sse
from sdc_orchestrator.backends import Dormant, EndpointRegistry
from sdc_orchestrator.failures import NoRouteError
from sdc_orchestrator.scaling.client import Outcome, ScaleClient
from sdc_orchestrator.scaling.hold import HoldBook

HELD = Gauge("sdc_orchestrator_held_requests", "Requests waiting for a model to scale from zero", ["model"])


class Waker:
    def __init__(
        self,
        registry: EndpointRegistry,
        scale: ScaleClient | None,
        *,
        max_held: int,
        max_wait_s: float,
        poll_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.scale = scale
        self.book = HoldBook(max_held, max_wait_s, clock)
        self.poll_s = poll_s
        self.clock = clock
        self._writes: dict[str, asyncio.Task[Outcome]] = {}

    def would_hold(self, model: object) -> bool:
        return isinstance(model, str) and self.registry.dormant(model) is not None

    def _ask(self, dormant: Dormant) -> None:
        if self.scale is None or not self.book.should_ask(dormant.name, dormant.at_zero):
            return
        # A task of its own: a client that leaves does not cancel the write the others wait for.
        self._writes[dormant.name] = asyncio.create_task(
            self.scale.set_replicas(dormant.namespace, dormant.local_llm, 0, 1)
        )

    async def hold(self, model: str, dormant: Dormant, ready: Callable[[], Awaitable[bool]]) -> None:
        """Return once `ready()` (a replica serves `model`); raise NoRouteError 429/503 with Retry-After."""
        key = dormant.name
        if dormant.at_zero and self.scale is None:
            raise NoRouteError(
                503,
                f"model '{model[:256]}' is scaled to zero and this orchestrator may not scale it "
                f"(orchestrator.scaleFromZero): `kubectl scale llm {dormant.local_llm} --replicas=1`",
                retry_after=30,
            )
        if not self.book.enter(key):
            raise NoRouteError(
                429,
                f"model '{model[:256]}' is starting from zero and {self.book.max_held} requests already wait "
                "for it; retry later",
                retry_after=self.book.retry_after(key),
            )
        HELD.labels(key).inc()
        try:
            self._ask(dormant)
            deadline = self.clock() + self.book.max_wait_s
            while True:
                change = self.registry.next_change()  # before `ready()` awaits: a document meanwhile counts
                if await ready():
                    self.book.served(key)
                    self._writes.pop(key, None)
                    return
                write = self._writes.get(key)
                if write is not None and write.done() and write.result() == "failed":
                    self._writes.pop(key, None)
                    self.book.served(key)  # the ask failed: the next request asks again
                    raise NoRouteError(
                        503, f"model '{model[:256]}' is at zero and could not be scaled up; retry later", retry_after=5
                    )
                if self.clock() >= deadline:
                    raise NoRouteError(
                        503,
                        f"model '{model[:256]}' got no ready replica within {self.book.max_wait_s:g}s "
                        "(scaling from zero); retry later",
                        retry_after=self.book.retry_after(key),
                    )
                await self.registry.changed(self.poll_s, change)  # the next document from the API, or the next poll
        finally:
            self.book.leave(key)
            HELD.labels(key).dec()

    async def close(self) -> None:
        for task in self._writes.values():
            task.cancel()
        if self.scale is not None:
            await self.scale.close()


async def keep_alive(opening: Awaitable[Any], every_s: float) -> AsyncIterator[bytes]:
    """A held stream: SSE comments while `opening` (Upstream.stream) waits, then its events; an error event
    (and [DONE]) if it cannot be served, since the 200 is already sent."""
    task: asyncio.Future[Any] = asyncio.ensure_future(opening)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                break
            yield sse.comment("waiting for a replica (scaling from zero)")
        try:
            _, events = task.result()
        except NoRouteError as err:
            yield sse.error(str(err), "scale_from_zero", code=err.status) + sse.frame(sse.DONE)
            return
        async for chunk in events:
            yield chunk
    finally:
        if not task.done():
            task.cancel()
