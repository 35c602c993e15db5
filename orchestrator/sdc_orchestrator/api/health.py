"""Probes, the routing status and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sdc_orchestrator import status
from sdc_orchestrator.api.deps import ServicesDep
from sdc_orchestrator.gateway import without_key_names

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Serving: documents and chat routes are up (models may still be arriving)."""
    return {"status": "ok"}


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process and its event loop answer; a restart would not help otherwise."""
    return {"status": "alive"}


@router.get("/metrics")
async def prometheus(request: Request, services: ServicesDep) -> Response:
    """Every series for an admin key (or an open gateway); without one, no series names a key (gateway.py)."""
    status.chat_state(services.settings, services.registry, services.router)  # the endpoint gauge, current
    text = generate_latest()
    if not request.scope.get("state", {}).get("metrics_full", True):
        text = without_key_names(text)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
