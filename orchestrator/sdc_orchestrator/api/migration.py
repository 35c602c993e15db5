"""Moving traffic between providers: feedback on answers, and the shadow comparison's report."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from sdc_orchestrator.api.deps import AdminDep, ServicesDep, TenantDep
from sdc_orchestrator.api.errors import error
from sdc_orchestrator.api_models import FeedbackIn
from sdc_orchestrator.feedback import AlreadyRated, UnknownResponse
from sdc_orchestrator.gateway import TENANT
from sdc_orchestrator.limits import InputError

router = APIRouter()


@router.post("/api/v1/feedback")
async def feedback(body: FeedbackIn, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    """Rate an answer (1 or -1) your tenant got; counted by the provider and model that gave it."""
    try:
        item = await asyncio.to_thread(services.feedback.rate, body.response_id, body.rating, body.comment, tenant)
    except UnknownResponse:
        return error(404, f"no recent answer with response_id '{body.response_id}'")
    except AlreadyRated:
        return error(409, f"answer '{body.response_id}' is already rated")
    return JSONResponse({"response_id": item.response_id, "provider": item.provider, "model": item.model})


@router.get("/api/v1/shadow/report")
async def shadow_report(
    services: ServicesDep,
    tenant: TenantDep,
    admin: AdminDep,
    of: Annotated[str | None, Query(alias="tenant", max_length=256)] = None,
) -> dict[str, Any]:
    """Pairs of (served answer, shadow answer): latency, tokens and Korean similarity per side.

    A key sees its own tenant's pairs; an admin key (or an open gateway) every tenant's, or one: `?tenant=`.
    """
    if of is not None and not TENANT.fullmatch(of):
        raise InputError("tenant: 1-64 letters, digits, '.', '_' or '-'")
    if not admin and of not in (None, tenant):
        raise InputError(f"this key belongs to tenant '{tenant}' and may see only its report", 403)
    return services.shadow.report(of if admin else tenant)
