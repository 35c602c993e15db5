"""The orchestrator follows the endpoints ConfigMap through the API (a real HTTP server plays the API server).

What matters: a change reaches the registry as soon as the watch event does
(not at the kubelet's file sync), the pod's token goes with every request, a
deleted ConfigMap empties the published endpoints, and when the API refuses or
is gone the mounted file serves again.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.endpoint_watch import ApiAccess, start_endpoint_watch
from sdc_orchestrator.settings import OrchestratorSettings

from tests.support.servers import serve

NS, NAME = "sdc", "sdc-endpoints"


def document(*models: str) -> str:
    return json.dumps(
        {
            "endpoints": [
                {"name": f"{NS}/{m}", "runtime": "vllm", "baseUrl": f"http://{m}:8000/v1", "model": m, "namespace": NS}
                for m in models
            ]
        }
    )


def configmap(doc: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": NAME, "namespace": NS, "resourceVersion": version}, "data": {"endpoints.json": doc}}


class FakeApi:
    """GET .../configmaps lists one ConfigMap; with watch=true it streams the events put on `events`."""

    def __init__(self, doc: str) -> None:
        self.doc, self.refuse = doc, False
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.tokens: list[str | None] = []
        self.app = FastAPI()
        self.app.get(f"/api/v1/namespaces/{NS}/configmaps")(self.configmaps)

    async def configmaps(self, request: Request) -> Any:
        self.tokens.append(request.headers.get("authorization"))
        if self.refuse:
            return JSONResponse({"kind": "Status", "code": 403}, status_code=403)
        assert request.query_params["fieldSelector"] == f"metadata.name={NAME}"
        if request.query_params.get("watch") != "true":
            return {"metadata": {"resourceVersion": "1"}, "items": [configmap(self.doc, "1")]}
        return StreamingResponse(self.stream(), media_type="application/json")

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            event = await asyncio.to_thread(self.events.get)
            if event is None:  # the API server ends the watch
                return
            yield (json.dumps(event) + "\n").encode()


def models(registry: EndpointRegistry) -> list[str]:
    return sorted(str(e.model) for e in registry.all())


async def until(check: Callable[[], bool], within_s: float = 5) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_the_registry_follows_the_configmap_within_a_second(tmp_path: Path) -> None:
    mounted = tmp_path / "endpoints.json"
    mounted.write_text(document("from-file"))
    token = tmp_path / "token"
    token.write_text("token-1\n")
    api = FakeApi(document("listed"))
    settings = OrchestratorSettings(
        llm_service_type="none", sdc_endpoints_file=mounted, sdc_namespace=NS, sdc_endpoints_configmap=NAME
    )
    registry = EndpointRegistry(settings)
    assert models(registry) == ["from-file"]

    async def scenario(base: str) -> None:
        access = ApiAccess(base, token, tmp_path / "no-ca.crt")
        task = start_endpoint_watch(settings, registry, access)
        assert task is not None
        try:
            await until(lambda: models(registry) == ["listed"])
            # A new model: in the registry as soon as the event arrives.
            sent = time.monotonic()
            api.events.put({"type": "MODIFIED", "object": configmap(document("listed", "new"), "2")})
            await until(lambda: models(registry) == ["listed", "new"])
            assert time.monotonic() - sent < 1.0
            mounted.write_text(document("stale-file"))  # the kubelet's late copy does not override the API
            assert models(registry) == ["listed", "new"]
            token.write_text("token-2\n")  # a rotated token is used from the next request on
            api.events.put({"type": "DELETED", "object": configmap("", "3")})
            await until(lambda: models(registry) == [])
            # The API refuses (RBAC removed): the mounted file serves again.
            api.refuse = True
            api.events.put(None)
            await until(lambda: models(registry) == ["stale-file"])
            # ... until the API answers again.
            api.refuse = False
            api.doc = document("back")
            await until(lambda: models(registry) == ["back"], within_s=10)
        finally:
            task.cancel()
            api.events.put(None)

    with serve(api.app) as base:
        asyncio.run(scenario(base))
    assert api.tokens[0] == "Bearer token-1" and "Bearer token-2" in api.tokens


def test_no_watch_without_a_name_or_api_access(tmp_path: Path) -> None:
    settings = OrchestratorSettings(sdc_namespace=NS, sdc_endpoints_configmap=None)
    access = ApiAccess("http://127.0.0.1:1", tmp_path / "token", tmp_path / "ca.crt")
    registry = EndpointRegistry(settings)

    async def check() -> None:
        assert start_endpoint_watch(settings, registry, access) is None
        named = OrchestratorSettings(sdc_namespace=NS, sdc_endpoints_configmap=NAME)
        assert start_endpoint_watch(named, registry) is None  # not in a pod: no token, no watch

    asyncio.run(check())


def test_models_at_zero_and_autoscaling_come_through_the_watch(tmp_path: Path) -> None:
    """Found on the real node: with the watch on (the chart's default), only `endpoints` was taken from the
    API's document, so a model at zero (the `unready` key) was a 404 instead of being held and woken, and
    the autoscaler never saw any model's bounds."""
    mounted = tmp_path / "endpoints.json"
    mounted.write_text(json.dumps({"endpoints": []}))
    token = tmp_path / "token"
    token.write_text("token\n")
    asleep = {
        "endpoints": [
            {
                **json.loads(document("awake"))["endpoints"][0],
                "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 60},
            }
        ],
        "unready": [
            {
                "name": f"{NS}/asleep",
                "namespace": NS,
                "localLLM": "asleep",
                "runtime": "transformers",
                "model": "sdc/tiny",
                "replicas": 0,
                "atZero": True,
                "phase": "Pending",
            }
        ],
    }
    api = FakeApi(json.dumps(asleep))
    settings = OrchestratorSettings(
        llm_service_type="none", sdc_endpoints_file=mounted, sdc_namespace=NS, sdc_endpoints_configmap=NAME
    )
    registry = EndpointRegistry(settings)
    assert registry.dormant("sdc/tiny") is None

    async def scenario(base: str) -> None:
        task = start_endpoint_watch(settings, registry, ApiAccess(base, token, tmp_path / "no-ca.crt"))
        assert task is not None
        try:
            await until(lambda: registry.dormant("sdc/tiny") is not None)
            dormant = registry.dormant("sdc/tiny")
            assert dormant is not None and (dormant.local_llm, dormant.at_zero) == ("asleep", True)
            assert (auto := registry.autoscaling(f"{NS}/awake")) is not None and auto.min_replicas == 0
            # Woken: the model leaves `unready` through the next event.
            api.events.put({"type": "MODIFIED", "object": configmap(document("awake"), "2")})
            await until(lambda: registry.dormant("sdc/tiny") is None)
            assert registry.autoscaling(f"{NS}/awake") is None
        finally:
            task.cancel()
            api.events.put(None)

    with serve(api.app) as base:
        asyncio.run(scenario(base))


@pytest.mark.parametrize("check_s", [0.0, 0.5])
def test_a_held_request_wakes_at_the_watch_event_not_at_its_next_poll(tmp_path: Path, check_s: float) -> None:
    """Scale from zero: the document naming the new replica releases the held requests as it arrives (the hold
    used to poll every 0.25 s); here the poll is 30 s, so only the wake-up can release them in time. With
    `check_s`, the readiness check reads the registry and then awaits (as `served_models` may, over HTTP):
    the document arrives during that await, and must still wake the holders."""
    from sdc_orchestrator.scaling.waker import Waker

    waking: dict[str, Any] = {"name": f"{NS}/m", "namespace": NS, "localLLM": "m", "runtime": "vllm", "model": "m"}
    waking.update({"replicas": 1, "atZero": False, "phase": "Starting"})
    token = tmp_path / "token"
    token.write_text("t\n")
    api = FakeApi(json.dumps({"endpoints": [], "unready": [waking]}))
    settings = OrchestratorSettings(llm_service_type="none", sdc_namespace=NS, sdc_endpoints_configmap=NAME)
    registry = EndpointRegistry(settings)
    waker = Waker(registry, None, max_held=8, max_wait_s=60, poll_s=30)

    async def served() -> bool:
        ready = models(registry) == ["m"]
        await asyncio.sleep(check_s)
        return ready

    async def scenario(base: str) -> list[float]:
        task = start_endpoint_watch(settings, registry, ApiAccess(base, token, tmp_path / "no-ca.crt"))
        assert task is not None
        try:
            await until(lambda: registry.dormant("m") is not None)
            dormant = registry.dormant("m")
            assert dormant is not None

            async def held() -> float:
                await waker.hold("m", dormant, served)
                return time.monotonic()

            holders = [asyncio.create_task(held()) for _ in range(4)]
            await asyncio.sleep(0.2)  # all four polled once and wait
            sent = time.monotonic()
            api.events.put({"type": "MODIFIED", "object": configmap(document("m"), "2")})
            return [t - sent for t in await asyncio.wait_for(asyncio.gather(*holders), 10)]
        finally:
            task.cancel()
            api.events.put(None)

    with serve(api.app) as base:
        released = asyncio.run(scenario(base))
    assert max(released) < 1.0 + 2 * check_s, released
