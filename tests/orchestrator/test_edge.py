"""The HTTP edge over real sockets against a real uvicorn server (sdc_orchestrator.edge), every wait bounded.

Slowloris-style half-sent requests, a 64 MiB header, too many headers, idle
connections and a body that never finishes: each is cut off by the edge's
limits before authentication, while /healthz keeps answering fast.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sdc_orchestrator.app import create_app
from sdc_orchestrator.edge import EdgeLimits, server_config
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.servers import free_port

LIMITS = EdgeLimits(max_head_bytes=64 * 1024, max_headers=100, head_timeout_s=1.0, body_timeout_s=2.0)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The orchestrator behind the edge, keys required; yields (host, port)."""
    keys = tmp_path / "keys"
    keys.write_text("team-a:secret\n")
    settings = OrchestratorSettings(sdc_data_dir=tmp_path / "data", sdc_api_keys_file=keys, gemini_api_key="")
    port = free_port()
    config = server_config(create_app(settings), "127.0.0.1", port, LIMITS, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=10)
    sock.settimeout(10)
    return sock


def read_all(sock: socket.socket, limit_s: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (seconds from now)."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data, time.monotonic() - started


class HealthProbe:
    """Calls /healthz every 50 ms on its own connection pool while a test runs; keeps the slowest answer."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.url = f"http://{addr[0]}:{addr[1]}/healthz"
        self.slowest = 0.0
        self.failures = 0
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.failures += not ok
                self.calls += 1
                self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.calls and time.monotonic() < deadline:  # warmed up: one answer before the attack
            time.sleep(0.01)
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_a_64_mib_header_is_refused_early_and_health_stays_fast(edge: tuple[str, int]) -> None:
    with HealthProbe(edge) as probe:
        sock = connect(edge)
        started = time.monotonic()
        sent = 0
        chunk = b"a" * 65536
        try:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
            while sent < 64 * 2**20:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what we want
        answer, _ = read_all(sock)
        took = time.monotonic() - started
        sock.close()
        time.sleep(0.2)  # a few more probes after the attack
    print(f"\n64 MiB header: cut after {sent} bytes sent, {took:.2f} s; /healthz slowest {probe.slowest * 1000:.0f} ms")
    assert sent < 16 * 2**20, "the server stopped reading long before 64 MiB"
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:100]
    assert b"401" not in answer[:20], "refused before authentication"
    assert took < 5
    assert probe.calls >= 2 and probe.failures == 0 and probe.slowest < 1.0


def test_too_many_headers_are_refused(edge: tuple[str, int]) -> None:
    sock = connect(edge)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    answer, took = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"more than 100 headers" in answer, answer[:200]
    assert took < 2


def test_slowloris_headers_are_cut_off_and_health_stays_fast(edge: tuple[str, int]) -> None:
    """40 connections each sending a header line at a time, slowly: all get a 408 and are closed."""
    with HealthProbe(edge) as probe, ExitStack() as stack:
        socks = [stack.enter_context(connect(edge)) for _ in range(40)]
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        closed: dict[int, float] = {}
        while len(closed) < len(socks) and time.monotonic() - started < 6:
            for i, sock in enumerate(socks):
                if i in closed:
                    continue
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    closed[i] = time.monotonic() - started
            time.sleep(0.2)
        answers = [read_all(sock, 2)[0] for sock in socks]
    print(f"\nslowloris: {len(closed)} of {len(socks)} cut, last after {max(closed.values(), default=0):.2f} s; "
          f"/healthz slowest {probe.slowest * 1000:.0f} ms over {probe.calls} calls")  # fmt: skip
    assert len(closed) == len(socks), "every half-sent request is dropped"
    assert max(closed.values()) < LIMITS.head_timeout_s + 2
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
    assert probe.failures == 0 and probe.slowest < 1.0


def test_a_silent_connection_is_closed(edge: tuple[str, int]) -> None:
    sock = connect(edge)
    answer, took = read_all(sock)
    assert answer == b"" and took < LIMITS.head_timeout_s + 1.5


@pytest.mark.parametrize("key", [b"secret", b"wrong"])
def test_a_body_that_never_finishes_is_cut_off(edge: tuple[str, int], key: bytes) -> None:
    sock = connect(edge)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + b"\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"messages": '
    )
    answer, took = read_all(sock)
    # A wrong key is answered at once (the gateway reads no body) and the connection closed at the body deadline;
    # a right one waits for the body, then gets a 408.
    expected = b"HTTP/1.1 408" if key == b"secret" else b"HTTP/1.1 401"
    assert answer.startswith(expected), answer[:200]
    assert took < LIMITS.body_timeout_s + 1.5


def test_normal_requests_pass_the_edge(edge: tuple[str, int]) -> None:
    base = f"http://{edge[0]}:{edge[1]}"
    with httpx.Client(timeout=10) as client:
        assert client.get(base + "/healthz").status_code == 200
        # Keep-alive: several requests on one connection, each with its own header deadline.
        for _ in range(3):
            assert client.get(base + "/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
            time.sleep(LIMITS.head_timeout_s * 0.6)
        assert client.get(base + "/healthz", headers={f"X-H{i}": "v" * 100 for i in range(60)}).status_code == 200


def test_the_served_protocol_can_be_pickled_for_worker_processes() -> None:
    """`--workers N` spawns processes with the config pickled: the protocol class must import by name."""
    import pickle

    from sdc_orchestrator.edge import BoundedHttpToolsProtocol

    config = server_config("sdc_orchestrator.app:create_app", "127.0.0.1", 0, EdgeLimits.from_env(keep_alive_s=30))
    assert config.http is BoundedHttpToolsProtocol
    assert pickle.loads(pickle.dumps(config.http)) is BoundedHttpToolsProtocol  # noqa: S301 - our own bytes
    assert server_config("x:y", "127.0.0.1", 0, LIMITS).http is not BoundedHttpToolsProtocol, "other limits, own class"
