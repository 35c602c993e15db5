"""The malformed-input corpus against a real orchestrator: every hostile input a clean 4xx, no 5xx, no hang."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.support.fake_openai import FakeBackend
from tests.support.hostile import cases

Backends = dict[str, tuple[FakeBackend, str]]


def test_every_hostile_input_is_a_clean_4xx(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator()
    httpx.post(f"{base}/api/v1/documents", json={"id": "seed", "text": "서울은 대한민국의 수도입니다."}, timeout=30)
    corpus = cases()
    assert len(corpus) >= 150
    bad: list[str] = []
    slowest = 0.0
    with httpx.Client(timeout=15) as client:
        for name, method, path, body in corpus:
            started = time.monotonic()
            try:
                resp = client.request(
                    method, base + path, content=body, headers={"content-type": "application/json"} if body else {}
                )
            except httpx.TimeoutException:
                bad.append(f"{name}: hung")
                continue
            except httpx.HTTPError as err:
                bad.append(f"{name}: connection broken ({type(err).__name__})")
                continue
            slowest = max(slowest, time.monotonic() - started)
            if not 400 <= resp.status_code < 500:
                bad.append(f"{name}: {resp.status_code} {resp.text[:200]}")
            elif "error" not in resp.json():
                bad.append(f"{name}: {resp.status_code} without an error body: {resp.text[:200]}")
    print(f"\nhostile inputs tried: {len(corpus)}, clean 4xx: {len(corpus) - len(bad)}, slowest {slowest:.2f} s")
    assert not bad, "\n".join(bad)
    assert all(fake.calls == 0 for fake, _ in backends.values()), "no hostile input reached a backend"
