"""Engine-aware routing through the real orchestrator, against simulated engines (real HTTP servers on loopback).

The replicas are published as the operator publishes pods (one entry each, `baseUrl` and `metricsUrl`); the
engines keep a prefix cache and report it in vLLM's metric names, so the hit rates here are the engines' own.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from benchmarks.engine_sim import Fleet, documents, fleet_in_thread
from tests.support.servers import free_port

Start = Callable[..., tuple[str, FastAPI]]
REPLICA = "x-sdc-replica"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with fleet_in_thread(4) as running:
        yield running


def publish(tmp_path: Path, fleet: Fleet, dead_metrics: int | None = None) -> Path:
    entries = []
    for i, url in enumerate(fleet.urls):
        metrics = f"http://127.0.0.1:{free_port()}/metrics" if i == dead_metrics else f"{url}/metrics"
        entries.append(
            {
                "name": "sdc/sim",
                "namespace": "sdc",
                "localLLM": "sim",
                "replica": f"sim-{i}",
                "runtime": "vllm",
                "model": "sim",
                "baseUrl": f"{url}/v1",
                "metricsUrl": metrics,
                "weight": 100,
                "role": "chat",
            }
        )
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    return path


def start(orchestrator_app: Start, tmp_path: Path, fleet: Fleet, **env: Any) -> str:
    base, _ = orchestrator_app(
        sdc_endpoints_file=publish(tmp_path, fleet, **env),
        sdc_namespace="sdc",
        llm_service_type="none",
        llm_fallback="none",
    )
    return base


def ask(client: httpx.Client, base: str, doc: str, question: str) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "system", "content": doc}, {"role": "user", "content": question}]}
    return client.post(f"{base}/v1/chat/completions", json=body)


def engine_hit_rate(fleet: Fleet) -> float:
    queries = sum(e.queries for e in fleet.engines)
    return sum(e.hits for e in fleet.engines) / queries if queries else 0.0


def test_a_document_stays_on_its_replica_and_the_engines_hit_their_caches(
    orchestrator_app: Start, tmp_path: Path, fleet: Fleet
) -> None:
    import random

    base = start(orchestrator_app, tmp_path, fleet)
    docs = documents(8, random.Random(1))  # noqa: S311 - reproducible choices
    where: dict[int, set[str]] = {}
    with httpx.Client(timeout=10) as client:
        for round_ in range(4):
            for d, doc in enumerate(docs):
                resp = ask(client, base, doc, f"{round_}번째 질문입니다")
                assert resp.status_code == 200, resp.text
                where.setdefault(d, set()).add(resp.headers[REPLICA])
        metrics = client.get(f"{base}/metrics").text
    assert all(len(replicas) == 1 for replicas in where.values()), where
    assert len({next(iter(r)) for r in where.values()}) >= 3, "documents spread over the replicas"
    assert all(name.startswith("sdc/sim/sim-") for r in where.values() for name in r)
    assert engine_hit_rate(fleet) >= 0.7  # 8 cold misses out of 32, and each question's own tail
    assert 'sdc_orchestrator_route_decisions_total{reason="affinity"}' in metrics
    assert 'sdc_orchestrator_prefix_index_blocks_total{result="hit"}' in metrics


def test_a_replica_whose_metrics_cannot_be_read_still_serves(
    orchestrator_app: Start, tmp_path: Path, fleet: Fleet
) -> None:
    import random

    base = start(orchestrator_app, tmp_path, fleet, dead_metrics=0)
    docs = documents(12, random.Random(2))  # noqa: S311 - reproducible choices
    with httpx.Client(timeout=10) as client:
        time.sleep(1.5)  # a scrape round or two: replica 0's page is unreadable
        served = Counter(ask(client, base, doc, "질문").headers[REPLICA] for doc in docs for _ in range(2))
        metrics = client.get(f"{base}/metrics").text
    assert served["sdc/sim/sim-0"] > 0, served
    assert 'sdc_orchestrator_replica_scrape_errors_total{replica="sdc/sim/sim-0"}' in metrics


def test_a_burst_on_one_prefix_spreads_and_nothing_fails(orchestrator_app: Start, tmp_path: Path, fleet: Fleet) -> None:
    import random

    base = start(orchestrator_app, tmp_path, fleet)
    [doc] = documents(1, random.Random(3))  # noqa: S311 - reproducible choices
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: ask(client, base, doc, f"질문 {i}"), range(48)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    used = Counter(r.headers[REPLICA] for r in answers)
    assert len(used) >= 2 and max(used.values()) < 48 * 0.75, used


def test_the_scraper_reads_vllm_names_from_a_real_page_and_counts_what_it_cannot(fleet: Fleet) -> None:
    import asyncio

    from prometheus_client import REGISTRY
    from sdc_orchestrator.routing.scrape import Scraper

    fleet.engines[0].hits, fleet.engines[0].queries = 30, 40  # as if it had served
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    scraper = Scraper(timeout_s=1.0)
    before = REGISTRY.get_sample_value("sdc_orchestrator_replica_scrape_errors_total", {"replica": "dead"}) or 0.0

    async def scrape() -> None:
        await scraper.scrape_all([("live", f"{fleet.urls[0]}/metrics"), ("dead", dead)])
        await scraper.close()

    asyncio.run(scrape())
    reading = scraper.signals("live")
    assert reading is not None and (reading.prefix_hits, reading.prefix_queries) == (30, 40)
    assert (reading.waiting, reading.running) == (0, 0)
    assert scraper.signals("dead") is None
    after = REGISTRY.get_sample_value("sdc_orchestrator_replica_scrape_errors_total", {"replica": "dead"})
    assert after == before + 1
