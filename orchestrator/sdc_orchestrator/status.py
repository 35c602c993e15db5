"""What the orchestrator can serve right now: readiness, `GET /api/v1/status` and the endpoint gauge.

Readiness keeps Kubernetes' convention: Ready means this process can serve, not that every dependency
answers. With no model published the orchestrator still serves documents, feedback, its reports and a
clear 503 on chat ("no model yet"), so it is Ready: `helm install --wait` completes with the chart's
defaults, and GitOps tools see the release healthy before the first LocalLLM. The routing state (no
model yet, ready, every endpoint cooling down) is reported instead in three places a person or a tool
reads: the /readyz body, `GET /api/v1/status`, and the gauge `sdc_orchestrator_chat_endpoints`.
Pulling a pod out of its Service because its backends failed would only turn a 502 that names the
failing backend into a connection refused that names nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import Gauge

from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.router import Router
from sdc_orchestrator.settings import OrchestratorSettings

CHAT_ENDPOINTS = Gauge(
    "sdc_orchestrator_chat_endpoints",
    "Chat endpoints configured (published LocalLLMs, Gemini, the seed's service) by state; "
    "none at all is the 'no model yet' state",
    ["state"],
)

NO_MODEL_YET = "no model yet"


def no_model_message(settings: OrchestratorSettings) -> str:
    """What a chat without any endpoint is told: where a LocalLLM must go for this release to serve it."""
    served = settings.route_namespaces()
    where = "any namespace" if served is None else ", ".join(sorted(served))
    home = settings.sdc_namespace or "<namespace>"
    return (
        f"{NO_MODEL_YET}: no Ready LocalLLM is published to this orchestrator and no Gemini key is set; "
        f"apply a LocalLLM in {where} (`kubectl apply -n {home} -f llm.yaml`) and follow it with "
        f"`kubectl get llm -n {home} -w`: chat answers once it is Ready"
    )


def chat_state(settings: OrchestratorSettings, registry: EndpointRegistry, router: Router) -> dict[str, Any]:
    """The routing state: `chat` is "no model yet", "ready" or "cooling"; also sets the gauge."""
    endpoints = registry.all("chat")
    cooling = [e.name for e in endpoints if router.is_cooling(e)]
    warm = [e.name for e in endpoints if e.name not in cooling]
    CHAT_ENDPOINTS.labels("ready").set(len(warm))
    CHAT_ENDPOINTS.labels("cooling").set(len(cooling))
    if not endpoints:
        return {"chat": NO_MODEL_YET, "message": no_model_message(settings), "endpoints": [], "cooling": []}
    if not warm:
        message = f"every chat endpoint failed in the last {settings.sdc_cooldown_s:g} s (SDC_COOLDOWN_S)"
        return {"chat": "cooling", "message": message, "endpoints": [], "cooling": cooling}
    return {"chat": "ready", "message": f"{len(warm)} chat endpoint(s) ready", "endpoints": warm, "cooling": cooling}


def routes(settings: OrchestratorSettings, registry: EndpointRegistry, router: Router) -> APIRouter:
    api = APIRouter()

    @api.get("/readyz")
    async def readyz() -> dict[str, Any]:
        """Ready whenever the process serves (documents, reports, a clear 503 on chat); the body says what chat can do."""
        return {"status": "ok", **chat_state(settings, registry, router)}

    @api.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        """The routing state and each chat endpoint (name, provider, model, namespace, weight, cooling)."""
        state = chat_state(settings, registry, router)
        models = [
            {
                "name": e.name,
                "provider": e.provider,
                "model": e.model,
                "namespace": e.namespace,
                "weight": e.weight,
                "cooling": router.is_cooling(e),
            }
            for e in registry.all("chat")
        ]
        served = settings.route_namespaces()
        return {**state, "models": models, "namespaces": sorted(served) if served is not None else ["*"]}

    return api
