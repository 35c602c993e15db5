"""Ollama replicas are scored on their engine's queue, as read from their exporters: the real orchestrator, two
real `ollama serve` processes, each behind its `sdc-ollama-exporter`, published as the operator publishes pods.

Replica A's engine is stopped (SIGSTOP) with nine requests from elsewhere (another orchestrator, say) queued
through its exporter: this orchestrator has none in flight there, so only the scraped figures
(vllm:num_requests_running 1, vllm:num_requests_waiting 8) can tell it that A is busy. Before, new prompts
spread over both replicas; now every one goes to B, on its first attempt.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from tests.support.ollama_serve import OLLAMA, exporter, ollama

pytestmark = pytest.mark.skipif(not OLLAMA.exists(), reason="bin/ollama is missing: run `make ollama`")
Start = Callable[..., tuple[str, FastAPI]]
REPLICA = "x-sdc-replica"


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        page = resp.read().decode()
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith("vllm:")}


def ask(client: httpx.Client, base: str, doc: str) -> httpx.Response:
    # No model name: the one model's set is chosen by weight, nothing but the chat goes to a replica.
    body = {"messages": [{"role": "system", "content": doc}, {"role": "user", "content": "hello"}], "max_tokens": 4}
    return client.post(f"{base}/v1/chat/completions", json=body)


def failed_attempts() -> float:
    """Failed attempts on Ollama endpoints so far, of every kind (timeout, connect, http_<status>)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "sdc_orchestrator_attempt_errors"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("provider") == "ollama"
    )


def queue_on(port: int) -> None:
    """A request that waits in the stopped engine until it is continued (its answer is not needed)."""
    body = json.dumps({"model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 4}})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/generate", body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 - loopback
            resp.read()
    except OSError:
        pass


def test_an_ollama_replica_with_a_queue_gets_no_new_prompts(orchestrator_app: Start, tmp_path: Path) -> None:
    with (
        ollama(tmp_path / "a") as engine_a,
        ollama(tmp_path / "b") as engine_b,
        exporter(engine_a.port) as port_a,
        exporter(engine_b.port) as port_b,
    ):
        entries: list[dict[str, Any]] = [
            {
                "name": "sdc/tiny",
                "namespace": "sdc",
                "localLLM": "tiny",
                "replica": replica,
                "runtime": "ollama",
                "model": "tiny",
                "baseUrl": f"http://127.0.0.1:{port}/v1",
                "metricsUrl": f"http://127.0.0.1:{port}/metrics",
                "weight": 100,
                "role": "chat",
            }
            for replica, port in (("tiny-a", port_a), ("tiny-b", port_b))
        ]
        (tmp_path / "endpoints.json").write_text(json.dumps({"endpoints": entries}))
        base, _ = orchestrator_app(
            sdc_endpoints_file=tmp_path / "endpoints.json",
            sdc_namespace="sdc",
            llm_service_type="none",
            llm_fallback="none",
            sdc_attempt_timeout_s=30.0,
            sdc_total_timeout_s=60.0,
        )
        with httpx.Client(timeout=60) as client:
            # Idle: new prefixes go by rendezvous hashing, over both replicas.
            idle = Counter(ask(client, base, f"document {i} " * 8).headers[REPLICA] for i in range(12))
            assert set(idle) == {"sdc/tiny/tiny-a", "sdc/tiny/tiny-b"}, idle

            os.kill(engine_a.process.pid, signal.SIGSTOP)
            waiting = [threading.Thread(target=queue_on, args=(port_a,), daemon=True) for _ in range(9)]
            try:
                for thread in waiting:
                    thread.start()
                deadline = time.monotonic() + 10
                while metrics(port_a).get("vllm:num_requests_waiting") != 8:
                    assert time.monotonic() < deadline, metrics(port_a)
                    time.sleep(0.1)
                assert metrics(port_a)["vllm:num_requests_running"] == 1
                time.sleep(2.5)  # the orchestrator scrapes once a second
                failed_before = failed_attempts()
                # Six, quickly: the herd count holds each one against B until the next scrape (answered or not),
                # and the bound is relative to the mean; past about 0.6 x A's load - 3 of them it would let A
                # (1 running + 8 waiting, scored 17) back within it.
                busy = Counter(ask(client, base, f"another document {i} " * 8).headers[REPLICA] for i in range(6))
                page = client.get(f"{base}/metrics").text
            finally:
                os.kill(engine_a.process.pid, signal.SIGCONT)
            for thread in waiting:
                thread.join(timeout=60)
        assert busy == {"sdc/tiny/tiny-b": 6}, busy
        # Answered by B on the first attempt: none was sent to A and failed over after A's attempt timeout.
        assert failed_attempts() == failed_before
        load_a = next(
            float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith('sdc_orchestrator_replica_load{replica="sdc/tiny/tiny-a"}')
        )
        assert load_a >= 17, page  # 1 running + 8 waiting, the waiting counted twice: the engine's own figures
        assert metrics(port_a)["vllm:num_requests_waiting"] == 0
