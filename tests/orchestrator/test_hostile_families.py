"""The second hostile corpus (tests/support/hostile_families.py), family by family, against a real orchestrator.

Refused cases must get a 4xx with an error body and reach no backend; control-token
cases may be served, but no marker (in any width or compatibility form) may reach
the backend. The figure per family is printed, so a run gives the before/after count.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

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
