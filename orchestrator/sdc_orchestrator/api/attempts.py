"""Each chat request's Attempts, opened before the route and closed after it, with the headers they feed.

A plain ASGI middleware, not BaseHTTPMiddleware: that one hides the client's disconnect from the
endpoint, and a disconnect must cancel the upstream call. It opens the request's `Attempts` (the route
gets them through deps.attempts), stamps the response with the time the orchestrator itself added
(X-SDC-Overhead-Ms, and its histogram; for a stream only the time before the first byte) and the
replica that answered (X-SDC-Replica), and when the request ends, however it ends, gives back every
router slot still held: the one place a cancelled request is accounted.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdc_orchestrator import metrics
from sdc_orchestrator.routing import service as routing
from sdc_orchestrator.upstream import Attempts

OVERHEAD_HEADER = "X-SDC-Overhead-Ms"


class AttemptsMiddleware:
    PATHS = ("/api/v1/chat", "/v1/chat", "/api/v1/generate", "/generate")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.PATHS):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        attempts = Attempts()
        scope.setdefault("state", {})["attempts"] = attempts

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = max(0.0, time.perf_counter() - started - attempts.upstream_s)
                message["headers"] = [
                    *message.get("headers", []),
                    (OVERHEAD_HEADER.lower().encode(), f"{own * 1000:.3f}".encode()),
                ]
                if attempts.chosen is not None:
                    message["headers"].append(
                        (routing.REPLICA_HEADER.lower().encode(), attempts.chosen.name.encode("ascii", "replace"))
                    )
                metrics.OVERHEAD.observe(own)
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            attempts.close()
