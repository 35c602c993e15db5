"""The chart's `helm test` check (sdc_orchestrator.selfcheck), run here against a real orchestrator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def selfcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdc_orchestrator.selfcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_release_with_no_model_passes_and_says_so(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    """As on a fresh `helm install`: the chart's keys file (a hashed line first is skipped), no model."""
    keys = tmp_path / "keys"
    keys.write_text("# the chart's format\nops:sha256:" + "0" * 64 + "\nadmin:sk-sdc-test\n")
    base = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_api_keys_file=keys)
    done = selfcheck("--url", base, "--keys-file", str(keys))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok    GET /readyz: HTTP 200; chat: no model yet (no model yet: no Ready LocalLLM")
    assert lines[1:] == [
        "ok    GET /v1/models without a key: HTTP 401 (the gateway must refuse it)",
        "ok    GET /v1/models: HTTP 200; models: auto",
        "ok    GET /api/v1/status: chat: no model yet; endpoints: none",
        "passed",
    ]


def test_a_wrong_key_or_no_server_fails(orchestrator: Callable[..., str], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("admin:sk-sdc-right\n")
    base = orchestrator(llm_service_type="none", gemini_api_key=None, sdc_api_keys_file=keys)
    wrong = selfcheck("--url", base, "--key", "sk-sdc-wrong")
    assert wrong.returncode == 1 and "FAIL  GET /v1/models: HTTP 401" in wrong.stdout, wrong.stdout
    gone = selfcheck("--url", "http://127.0.0.1:9", "--key", "k")
    assert gone.returncode == 1 and "does not answer" in gone.stdout
