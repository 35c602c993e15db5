"""Wiring of replica routing into the app: the scrape loop over the published replicas, and its header."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.router import Router

REPLICA_HEADER = "X-SDC-Replica"  # names the endpoint that answered: `<namespace>/<LocalLLM>/<pod>`, `env/vllm`, ...


def scrape_targets(registry: EndpointRegistry, router: Router) -> Callable[[], list[tuple[str, str]]]:
    """Each round: the published chat replicas with a metrics URL; replicas no longer published are forgotten."""

    def targets() -> list[tuple[str, str]]:
        endpoints = registry.all("chat")
        router.replicas.forget_except([e.name for e in endpoints])
        return [(e.name, e.metrics_url) for e in endpoints if e.metrics_url]

    return targets


def start(registry: EndpointRegistry, router: Router) -> asyncio.Task[None]:
    """The scrape loop as a task of the running loop; cancel it, then `router.replicas.scraper.close()`."""
    return asyncio.get_running_loop().create_task(router.replicas.scraper.run(scrape_targets(registry, router)))
