"""`sdc-ollama-exporter`: a reverse proxy in front of `ollama serve` that serves vLLM's metrics for it.

Ollama serves no /metrics, so the orchestrator's router would score its
replicas on its own counts while vLLM and sdc-runtime replicas are scored on
their engines' queues. In the operator's Ollama pod this proxy owns the pod's
API port (11434, the one the Service and the published replica entries name)
and `ollama serve` listens on loopback behind it (127.0.0.1:11435), so every
request passes here: the proxy counts what is in flight per model and reads
the counters in the responses (ollama_counts.py), and answers GET /metrics
itself. Everything else is forwarded byte for byte (streams stay streams:
each piece is relayed as it arrives).

Small on purpose (standard library only, one event loop, tens of MiB): an
HTTP/1.1 server with keep-alive towards clients and one short loopback
connection to Ollama per request. A client that goes away while its request
waits or streams closes the upstream connection, so Ollama drops the request
too (as it would have, had the client talked to it directly). Bodies past
--max-body-bytes are refused with 413, heads past 64 KiB with 431, malformed
requests with 400; an unreachable Ollama is a 502 naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sdc_runtime.ollama_counts import MAX_OBSERVED_BYTES, Flight, Tracker, env_int

log = logging.getLogger("sdc_runtime.ollama_exporter")
HEAD_LIMIT = 64 << 10
IDLE_S = 75.0  # keep-alive: a client connection idle this long is closed
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",  # set by the proxy from what it actually sends
        "expect",
    }
)
REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Head:
    first: list[str]  # request: method, target, version; response: version, status, reason
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def parse_head(raw: bytes, request: bool) -> Head:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as err:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable head") from err
    lines = text.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < (3 if request else 2) or not first[-1 if request else 0].startswith("HTTP/1."):
        raise HttpError(400, f"malformed {'request' if request else 'status'} line")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpError(400, "malformed header line")
        headers.append((name, value.strip()))
    return Head(first, headers)


async def read_head(reader: asyncio.StreamReader, carry: bytes = b"") -> bytes | None:
    """The bytes of one head up to the blank line; None at a clean end of the connection."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial.strip() and not carry:
            return None
        raise HttpError(400, "the connection ended inside a head") from err
    except asyncio.LimitOverrunError as err:
        raise HttpError(431, f"head larger than {HEAD_LIMIT} bytes") from err
    return carry + raw[:-4]


async def read_chunked(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    parts, size = [], 0
    async for piece in iter_chunked(reader):
        size += len(piece)
        if limit is not None and size > limit:
            raise HttpError(413, f"body larger than {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


async def iter_chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Decoded pieces of a chunked body (trailers read and dropped)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as err:
            raise HttpError(400, "malformed chunk size") from err
        if size < 0:
            raise HttpError(400, "malformed chunk size")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        data = await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "malformed chunk end")
        yield data


async def read_body(reader: asyncio.StreamReader, head: Head, limit: int) -> bytes:
    encoding = (head.get("transfer-encoding") or "").lower()
    length = head.get("content-length")
    if encoding and length is not None:
        raise HttpError(400, "both Transfer-Encoding and Content-Length")
    if encoding:
        if encoding != "chunked":
            raise HttpError(400, f"unsupported Transfer-Encoding {encoding!r}")
        return await read_chunked(reader, limit)
    if length is None:
        return b""
    if not length.isdigit():
        raise HttpError(400, "malformed Content-Length")
    if int(length) > limit:
        raise HttpError(413, f"body of {length} bytes is larger than {limit}")
    return await reader.readexactly(int(length))


class Observer:
    """Feeds a response's pieces to the tracker: NDJSON lines, SSE data lines, or one JSON body."""

    def __init__(self, tracker: Tracker, flight: Flight, content_type: str) -> None:
        self.tracker, self.flight = tracker, flight
        self.whole = "json" in content_type and "ndjson" not in content_type
        self.buffer = b""
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_OBSERVED_BYTES:
            self.buffer = b""
            return
        self.buffer += data
        if self.whole:
            return
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._line(line.strip())

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{"):
            return
        self._piece(line)

    def _piece(self, raw: bytes) -> None:
        try:
            piece = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(piece, dict):
            self.tracker.observe(self.flight, piece)

    def close(self) -> None:
        if self.size > MAX_OBSERVED_BYTES:
            return
        if self.whole:
            self._piece(self.buffer)
        elif self.buffer.strip():
            self._line(self.buffer.strip())


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close and read what the client still sends, briefly: closing a socket with unread bytes resets
    the connection, and the client could lose the refusal it was just sent."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()
    with contextlib.suppress(TimeoutError, OSError, asyncio.LimitOverrunError, ValueError):
        async with asyncio.timeout(1.0):
            while await reader.read(1 << 16):
                pass


class Proxy:
    def __init__(self, tracker: Tracker, upstream: tuple[str, int], max_body: int) -> None:
        self.tracker = tracker
        self.upstream = upstream
        self.max_body = max_body
        self.active = 0  # exchanges forwarded to ollama and not yet answered in full
        self.idle = asyncio.Event()
        self.idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no exchange is in flight (at most `timeout_s`); whether that happened."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.idle.wait()
        except TimeoutError:
            return False
        return True

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        carry = b""
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(read_head(reader, carry), IDLE_S if not carry else None)
                    if raw is None:
                        return
                    carry = b""
                    head = parse_head(raw, request=True)
                    if (head.get("expect") or "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = await read_body(reader, head, self.max_body)
                except TimeoutError:
                    return
                except HttpError as err:
                    await self.refuse(writer, err)
                    await linger(reader, writer)
                    return
                keep, carry = await self.exchange(reader, writer, head, body)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, HttpError):
            return
        except asyncio.CancelledError:  # shutting down: the connection just closes
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def refuse(self, writer: asyncio.StreamWriter, err: HttpError) -> None:
        body = json.dumps({"error": str(err)}).encode()
        writer.write(
            f"HTTP/1.1 {err.status} {REASONS.get(err.status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def metrics(self, writer: asyncio.StreamWriter, keep: bool) -> None:
        body = self.tracker.render().encode()
        close = "" if keep else "Connection: close\r\n"
        writer.write(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{close}\r\n".encode()
            + body
        )
        await writer.drain()

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: Head, body: bytes
    ) -> tuple[bool, bytes]:
        """Forward one request and relay its answer; (keep the client connection, bytes read past it)."""
        method, target, version = head.first
        keep = version == "HTTP/1.1" and (head.get("connection") or "").lower() != "close"
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/metrics":
            await self.metrics(writer, keep)
            return keep, b""
        flight = self.tracker.start(path, body) if method == "POST" else None
        self.active += 1
        self.idle.clear()
        # Watch the client while Ollama works: EOF means it went away (drop the request upstream too);
        # a byte means it sent its next request early (kept for the next head).
        watch: asyncio.Task[bytes] = asyncio.ensure_future(reader.read(1))
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=HEAD_LIMIT)
            except OSError as err:
                await self.refuse(writer, HttpError(502, f"ollama at {self.upstream[0]}:{self.upstream[1]}: {err}"))
                return False, b""
            try:
                return await self.relay(up_reader, up_writer, writer, head, body, flight, watch, keep)
            except HttpError as err:  # raised before any byte of an answer went to the client
                await self.refuse(writer, err)
                return False, b""
            finally:
                up_writer.close()
        finally:
            self.active -= 1
            if not self.active:
                self.idle.set()
            if flight is not None:
                self.tracker.finish(flight)
            if not watch.done():
                watch.cancel()

    async def relay(
        self,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
        head: Head,
        body: bytes,
        flight: Flight | None,
        watch: asyncio.Task[bytes],
        keep: bool,
    ) -> tuple[bool, bytes]:
        method, target, _ = head.first
        # Host names the upstream: ollama bound to loopback refuses (403) a Host that is not local, such as
        # the Service's name `tiny.team:11434`, which it accepted when it listened on 0.0.0.0 itself.
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.upstream[0]}:{self.upstream[1]}"]
        lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in HOP_BY_HOP and k.lower() != "host"]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        head_task = asyncio.ensure_future(read_head(up_reader))
        done, _ = await asyncio.wait({head_task, watch}, return_when=asyncio.FIRST_COMPLETED)
        carry = b""
        if watch in done and head_task not in done:
            carry = watch.result()
            if not carry:  # the client left while its request waited: Ollama drops it when we close
                head_task.cancel()
                return False, b""
        raw = await head_task
        if raw is None:
            raise HttpError(502, "ollama closed the connection without an answer")
        try:
            response = parse_head(raw, request=False)
        except HttpError as err:
            raise HttpError(502, f"ollama answered a malformed head: {err}") from err
        status = int(response.first[1]) if response.first[1].isdigit() else 502
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        length = response.get("content-length")
        chunked = (response.get("transfer-encoding") or "").lower() == "chunked"
        out = [f"HTTP/1.1 {' '.join(response.first[1:])}"]
        out += [f"{k}: {v}" for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        if no_body:
            pass
        elif length is not None and length.isdigit() and not chunked:
            out.append(f"Content-Length: {length}")
        else:
            out.append("Transfer-Encoding: chunked")
        if not keep:
            out.append("Connection: close")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        observer = Observer(self.tracker, flight, response.get("content-type") or "") if flight else None
        if not no_body:
            if length is not None and length.isdigit() and not chunked:
                remaining = int(length)
                while remaining:
                    data = await up_reader.read(min(remaining, 1 << 16))
                    if not data:
                        raise ConnectionError("ollama ended the body early")
                    remaining -= len(data)
                    await self.send(writer, data, observer, chunk=False)
            else:
                pieces = iter_chunked(up_reader) if chunked else _until_eof(up_reader)
                try:
                    async for data in pieces:
                        await self.send(writer, data, observer, chunk=True)
                except HttpError as err:  # the head is out: all that is left is to cut the answer short
                    raise ConnectionError(f"ollama's chunked body is malformed: {err}") from err
                writer.write(b"0\r\n\r\n")
        await writer.drain()
        if observer is not None:
            observer.close()
        if watch.done() and not carry:
            carry = watch.result()
            if not carry:
                return False, b""
        return keep, carry

    async def send(self, writer: asyncio.StreamWriter, data: bytes, observer: Observer | None, chunk: bool) -> None:
        if observer is not None:
            observer.feed(data)
        if chunk:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            writer.write(data)
        await writer.drain()  # a client that went away raises here, which closes the upstream connection


async def _until_eof(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while data := await reader.read(1 << 16):
        yield data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sdc-ollama-exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on (default 0.0.0.0:11434)")
    parser.add_argument("--upstream", default="127.0.0.1:11435", help="ollama serve's host:port (loopback)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=env_int("OLLAMA_NUM_PARALLEL", 1),
        help="sequences per model, as ollama's OLLAMA_NUM_PARALLEL (default: that variable, else 1)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=env_int("OLLAMA_CONTEXT_LENGTH", 4096),
        help="tokens per sequence, as OLLAMA_CONTEXT_LENGTH (default: that variable, else 4096)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=32 << 20)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=45.0,
        help="at SIGTERM: stop accepting, then wait this long for the answers in flight (default 45 s; the pod's "
        "grace period and ollama's own later stop cover it)",
    )
    return parser.parse_args(argv)


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"sdc-ollama-exporter: {value!r} is not host:port")
    return host.strip("[]"), int(port)


async def serve(args: argparse.Namespace, ready: Callable[[int], None] | None = None) -> None:
    tracker = Tracker(args.parallel, args.context)
    proxy = Proxy(tracker, split_hostport(args.upstream), args.max_body_bytes)
    host, port = split_hostport(args.listen)
    server = await asyncio.start_server(proxy.client, host, port, limit=HEAD_LIMIT)
    bound = server.sockets[0].getsockname()[1]
    log.info("serving on %s:%d, forwarding to %s", host, bound, args.upstream)
    if ready is not None:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        # Drain: no new connection, the answers in flight finish (returning from here would cancel every
        # client task: asyncio.run cancels what is left). The pod's engine container stops later (its own
        # longer preStop pause), so ollama is still there to finish them.
        server.close()
        if not await proxy.drained(args.drain_timeout):
            log.warning("stopping with %d answers still in flight after %.0fs", proxy.active, args.drain_timeout)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
