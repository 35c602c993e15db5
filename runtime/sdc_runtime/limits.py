"""A request body limit in front of every route: a 413 before the body is read.

The limit sits below FastAPI's body parsing on purpose: FastAPI reads the
whole body and then turns any reading failure into a generic 400, and a
10 MB prompt must cost nothing. A declared Content-Length over the limit is
answered at once without reading a byte; a chunked body is counted as it
arrives, and the moment it crosses the limit the client gets the 413 and the
route sees a disconnect (whatever it answers after that is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await _answer(send, 413, self._message(int(declared)))
                return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await _answer(send, 413, self._message(received))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise  # a real failure; after our 413 the route's reaction to the "disconnect" is noise

    def _message(self, size: int) -> str:
        return f"request body is {size}+ bytes; this server accepts at most {self.max_bytes} (--max-body-bytes)"


async def _answer(send: Send, status: int, message: str) -> None:
    kind = "request_too_large" if status == 413 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
