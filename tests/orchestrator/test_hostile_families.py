"""The second hostile corpus (tests/support/hostile_families.py), family by family, against a real orchestrator.

Refused cases must get a 4xx with an error body and reach no backend; control-token
cases may be served, but no marker (in any width or compatibility form) may reach
the backend. The figure per family is printed, so a run gives the before/after count.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import httpx
from fastapi import FastAPI

from tests.support.fake_openai import FakeBackend
from tests.support.hostile import cases
from tests.support.hostile_families import families, markers_in

Backends = dict[str, tuple[FakeBackend, str]]


def test_every_family_holds(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(llm_fallback="none")
    fake = backends["vllm"][0]
    groups = families()
    total = sum(len(v) for v in groups.values())
    assert total + len(cases()) >= 400, "the two corpora together hold 400+ cases"
    report: list[str] = []
    bad: list[str] = []
    with httpx.Client(timeout=15) as client:
        for family, corpus in groups.items():
            failed = 0
            for name, method, path, raw, expect in corpus:
                calls, seen = fake.calls, len(fake.requests)
                why = ""
                try:
                    resp = client.request(
                        method, base + path, content=raw, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError as err:
                    why = f"connection broken or hung ({type(err).__name__})"
                else:
                    if resp.status_code >= 500:
                        why = f"{resp.status_code} {resp.text[:160]}"
                    elif resp.status_code >= 400 and "error" not in resp.json():
                        why = f"{resp.status_code} without an error body"
                    elif expect == "refuse" and resp.status_code < 400:
                        why = f"{resp.status_code}: served, not refused"
                    elif expect == "refuse" and fake.calls != calls:
                        why = "reached the backend"
                    elif expect == "clean" and (found := [m for b in fake.requests[seen:] for m in markers_in(b)]):
                        why = f"markers reached the backend: {found[:3]}"
                if why:
                    failed += 1
                    bad.append(f"[{family}] {name}: {why}")
            report.append(f"{family}: {len(corpus)} cases, {failed} failed")
    print("\n" + "\n".join(report) + f"\ntotal: {total} cases, {len(bad)} failed (first corpus: {len(cases())} more)")
    assert not bad, "\n".join(bad[:80])


# -- leaks: a backend's refusal never reaches the client verbatim -------------------------------------------
LEAKY = [
    "model not found at /models/secret-team/gemma-2-9b-it/config.json",
    "max_tokens too large; see http://10.0.3.7:8000/v1/models",
    "upstream vllm-gemma.sdc-llm.svc.cluster.local:8000 refused: context length 8192",
    "FileNotFoundError: [Errno 2] No such file: 'C:\\models\\weights.safetensors' on [fd00::3]:11434",
    "tokenizer at /root/.cache/huggingface/hub/models--x failed; engine 172.16.0.9:8000",
]
SECRETS = ["/models", "10.0.3.7", "8000", "svc.cluster", "sdc-llm", "C:\\", "fd00", "11434", "172.16", ".cache"]


def test_backend_refusals_are_rewritten_without_addresses_or_paths(
    orchestrator: Callable[..., str], backends: Backends
) -> None:
    base = orchestrator(llm_fallback="none")
    fake = backends["vllm"][0]
    fake.mode = "bad_request"
    requests = {
        "chat": ("/api/v1/chat", {"message": "안녕"}),
        "chat streamed": ("/api/v1/chat", {"message": "안녕", "stream": True}),
        "openai": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "안녕"}]}),
        "openai streamed": (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "안녕"}], "stream": True},
        ),
        "generate": ("/generate", {"query": "안녕"}),
    }
    cases, bad = 0, []
    for status in (400, 404, 422):
        fake.refusal_status = status
        for message in LEAKY:
            fake.refusal = {"error": {"message": message, "type": "internal", "param": "/etc/passwd"}}
            for name, (path, payload) in requests.items():
                cases += 1
                resp = httpx.post(base + path, json=payload, timeout=10)
                leaked = [s for s in SECRETS if s in resp.text]
                # A 404 (the backend lacks the model) is the backend's problem: another may serve, so a 502 when none does.
                expected = {status, 502} if status == 404 else {status}
                if resp.status_code not in expected or leaked or resp.json()["error"].get("type") == "internal":
                    bad.append(f"{name} {status} {message[:30]}: {resp.status_code} {leaked} {resp.text[:120]}")
    print(f"\nleaks: {cases} cases, {len(bad)} failed")
    assert not bad, "\n".join(bad[:20])


# -- stream hygiene ------------------------------------------------------------------------------------------
def test_line_separators_in_sources_do_not_cut_the_event(orchestrator: Callable[..., str]) -> None:
    base = orchestrator(llm_fallback="none")
    text = 'zqsep 안내문\u2028data: {"forged": true}\u2029끝\x85다음'
    assert httpx.post(f"{base}/api/v1/documents", json={"id": "sep", "text": text}, timeout=60).status_code == 200
    resp = httpx.post(f"{base}/api/v1/chat", json={"message": "zqsep 알려줘", "stream": True}, timeout=15)
    assert resp.status_code == 200
    # A line reader that splits on U+2028 (Python's splitlines, JavaScript's readers) sees whole JSON events.
    data = [line[len("data: ") :] for line in resp.text.splitlines() if line.startswith("data: ")]
    events = [json.loads(d) for d in data if d != "[DONE]"]
    assert any("forged" not in e and e.get("sources") for e in events)
    assert events[0]["sources"][0]["text"] == text, "the text itself arrives unchanged once parsed"


def test_a_stream_cancelled_before_its_first_token_frees_its_slot_at_once(
    orchestrator_app: Callable[..., tuple[str, FastAPI]], backends: Backends
) -> None:
    base, app = orchestrator_app(llm_fallback="none", sdc_attempt_timeout_s=20.0, sdc_total_timeout_s=30.0)
    state = app.state.sdc
    fake = backends["vllm"][0]
    fake.mode, fake.delay_s = "slow", 15.0  # no first token for 15 s

    def held() -> int:
        return sum(state.router.state(e).in_flight for e in state.registry.all("chat"))

    body = {"messages": [{"role": "user", "content": "안녕"}], "stream": True}
    with httpx.Client(timeout=30) as client:
        for path, payload in (("/v1/chat/completions", body), ("/api/v1/chat", {"message": "안녕", "stream": True})):
            with contextlib.suppress(httpx.ReadTimeout):
                client.post(base + path, json=payload, timeout=0.8)  # the client gives up before any token
            started = time.monotonic()
            while held() and time.monotonic() - started < 5:
                time.sleep(0.05)
            freed = time.monotonic() - started
            print(f"\n{path}: slot freed {freed:.2f} s after the client left")
            assert held() == 0 and freed < 2.0, "the slot is freed when the client leaves, not at the attempt timeout"
    deadline = time.monotonic() + 5
    while fake.disconnects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.disconnects == 2, "the backend call was closed too"
