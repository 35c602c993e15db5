"""The HTTP edge: what a connection may cost before any route, key check or body parsing runs.

uvicorn's httptools protocol has no header size or count limit (a 64 MiB
Authorization header was read whole, in 9 s, and answered 401), no deadline
on a half-sent request (a client sending a header a byte a minute holds its
connection for ever) and no timer at all on a connection that sends nothing.
`BoundedHttpToolsProtocol` adds, per connection, before the ASGI app sees a
request:

- the request line and headers: at most `max_head_bytes` (431 and close) and
  `max_headers` headers (431), read within `head_timeout_s` of their first
  byte or of the connection's opening (408 and close; a connection that sent
  nothing is just closed);
- the body: read within `body_timeout_s` of the headers' end (408 if no
  response started, and close: the route sees a disconnect; a connection
  whose request was refused unread is closed at the same deadline).

Idle keep-alive connections close after uvicorn's `timeout_keep_alive`, and
`limit_concurrency` caps connections plus requests in flight (a 503 beyond
it). The event loop does bounded work per connection, so health checks stay
fast however slowly others send. (`h11_max_incomplete_event_size` is set too,
for anyone who runs the app under uvicorn's h11 protocol instead.)
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools  # uvicorn[standard] brings it (the orchestrator's extra)
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class EdgeLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    head_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: int = 75
    limit_concurrency: int = 2048

    def per_connection(self) -> tuple[int, int, float, float]:
        """What the protocol itself enforces (keep-alive and concurrency are uvicorn's)."""
        return (self.max_head_bytes, self.max_headers, self.head_timeout_s, self.body_timeout_s)

    @classmethod
    def from_env(cls, keep_alive_s: int = 75) -> EdgeLimits:
        env = os.environ.get
        return cls(
            max_head_bytes=int(env("SDC_MAX_HEADER_BYTES", str(cls.max_head_bytes))),
            max_headers=int(env("SDC_MAX_HEADERS", str(cls.max_headers))),
            head_timeout_s=float(env("SDC_HEADER_TIMEOUT_S", str(cls.head_timeout_s))),
            body_timeout_s=float(env("SDC_BODY_TIMEOUT_S", str(cls.body_timeout_s))),
            keep_alive_s=keep_alive_s,
            limit_concurrency=int(env("SDC_LIMIT_CONCURRENCY", str(cls.limit_concurrency))),
        )


def _response(status: int, reason: str, message: str) -> bytes:
    body = f'{{"error": {{"message": "{message}", "code": {status}}}}}'.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's limits (uvicorn makes one instance per connection).

    At module level, limits from the environment, so that uvicorn's worker processes (spawned, the
    config pickled) can import it by name; `bounded_protocol` derives a class with other limits."""

    limits: ClassVar[EdgeLimits] = EdgeLimits.from_env()
    _refusal: bytes | None = None
    _head_open = True
    _head_bytes = 0
    _header_count = 0
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout_s, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_with(self, response: bytes | None) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        if response is not None:
            self.transport.write(response)
        self.transport.close()

    def _head_expired(self) -> None:
        self._timer = None
        if self._head_open:
            sent = self._head_bytes > 0
            self._close_with(
                _response(408, "Request Timeout", "the request headers were not sent in time") if sent else None
            )

    def _body_expired(self) -> None:
        # Disarmed when the message completes: firing means the body is still incomplete. With no
        # response yet, a 408; after one (the gateway refused unread), the connection is just closed.
        self._timer = None
        if self._head_open:
            return
        cycle = self.cycle
        started = cycle is not None and (cycle.response_started or cycle.response_complete)
        self._close_with(
            None if started else _response(408, "Request Timeout", "the request body was not sent in time")
        )

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            if self._head_bytes == 0 and self._timer is None:
                self._arm(self.limits.head_timeout_s, self._head_expired)
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._refusal is not None:
            self._close_with(self._refusal)
        elif self._head_open and self._head_bytes > self.limits.max_head_bytes:
            self._close_with(
                _response(
                    431,
                    "Request Header Fields Too Large",
                    f"the request headers exceed {self.limits.max_head_bytes} bytes",
                )
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = _response(
                431, "Request Header Fields Too Large", f"more than {self.limits.max_headers} headers"
            )
            raise httptools.HttpParserCallbackError("too many headers")
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # our own refusal surfaced as a parser error
            self._close_with(self._refusal)
            return
        super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._arm(self.limits.body_timeout_s, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._head_open, self._head_bytes = True, 0


def bounded_protocol(limits: EdgeLimits) -> type[asyncio.Protocol]:
    """The protocol class for `limits`: the module's own when they are its, else a subclass carrying them."""
    if limits.per_connection() == BoundedHttpToolsProtocol.limits.per_connection():
        return BoundedHttpToolsProtocol
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def server_config(app: Any, host: str, port: int, limits: EdgeLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn Config with the edge's limits: the bounded protocol, keep-alive and concurrency caps."""
    http: Any = bounded_protocol(limits)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        timeout_keep_alive=limits.keep_alive_s,
        limit_concurrency=limits.limit_concurrency,
        **options,
    )
