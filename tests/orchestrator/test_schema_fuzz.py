"""Property-based: requests generated from the published OpenAPI schema never get a server error.

Schemathesis draws valid (positive) and invalid (negative) requests for every
operation of the orchestrator's own /openapi.json and sends them over real HTTP
to a running orchestrator with real fake backends. `make test` runs a short,
derandomized pass (30 examples per operation and mode, about 300 requests, the
same ones every run, so CI's verdict is reproducible); `make fuzz` runs the full,
random one (150: more than 1300 requests, new ones each run; a failure prints the
seed to replay it):
`SDC_FUZZ_RANDOM=1 SDC_FUZZ_EXAMPLES=150 .venv/bin/pytest tests/orchestrator/test_schema_fuzz.py -s`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.fake_openai import FakeBackend

Backends = dict[str, tuple[FakeBackend, str]]
EXAMPLES = int(os.environ.get("SDC_FUZZ_EXAMPLES", "30"))
RANDOM = os.environ.get("SDC_FUZZ_RANDOM") == "1"
BODY_OPERATIONS = 4  # chat, generate, documents, OpenAI chat: each gets EXAMPLES valid and EXAMPLES invalid


def test_generated_requests_never_get_a_server_error(orchestrator: Callable[..., str], backends: Backends) -> None:
    base = orchestrator(sdc_max_body_bytes=256 * 1024, sdc_rate_limit_rpm=0)
    httpx.post(f"{base}/api/v1/documents", json={"id": "seed", "text": "서울은 대한민국의 수도입니다."}, timeout=30)
    schema = schemathesis.openapi.from_dict(httpx.get(f"{base}/openapi.json").json())
    statuses: Counter[str] = Counter()
    per_operation: Counter[str] = Counter()
    errors: list[str] = []
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /api/v1/chat",
        "POST /v1/chat/completions",
        "POST /api/v1/documents",
    }

    def send(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base, session=session, timeout=15)
        statuses[f"{response.status_code // 100}xx"] += 1
        per_operation[case.operation.label] += 1
        if response.status_code >= 500:
            errors.append(f"{case.operation.label}: {response.status_code} {response.text[:300]} <- {case.body!r:.300}")

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = given(case=operation.as_strategy(generation_mode=mode))(send)
            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=not RANDOM,
                suppress_health_check=list(HealthCheck),
            )(run)
            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
    total = sum(statuses.values())
    print(f"\ngenerated requests: {total} over {len(operations)} operations, by status class: {dict(statuses)}")
    print(f"server errors: {len(errors)}; per operation: {dict(per_operation)}")
    assert total >= 2 * BODY_OPERATIONS * EXAMPLES
    assert not errors, "\n".join(errors[:20])
