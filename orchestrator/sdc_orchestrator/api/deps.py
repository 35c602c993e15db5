"""Typed dependencies: what a route may ask for (the app's services, the caller's tenant, its attempts).

Each is `async def` although none awaits: FastAPI runs a plain `def` dependency in its thread pool, a
thread hop per dependency per request. The chat routes take one dependency (`chat`), not several: each
one FastAPI resolves costs CPU on the hot path (benchmarks/orchestrator_overhead.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from sdc_orchestrator.gateway import DEFAULT_TENANT
from sdc_orchestrator.pipeline import Call
from sdc_orchestrator.services import Services
from sdc_orchestrator.upstream import Attempts

USER_HEADER = "x-sdc-user"


def services_of(request: Request) -> Services:
    return cast(Services, request.app.state.sdc)


def tenant_of(request: Request) -> str:
    """The tenant the gateway found for the request's key (`default` with no keys file)."""
    return str(request.scope.get("state", {}).get("tenant") or DEFAULT_TENANT)


def attempts_of(request: Request) -> Attempts:
    """The request's attempts, opened (and closed when the request ends) by api/attempts.py's middleware."""
    found = request.scope.get("state", {}).get("attempts")
    if not isinstance(found, Attempts):
        raise RuntimeError(f"no attempts for {request.url.path}: AttemptsMiddleware must cover the route")
    return found


async def services(request: Request) -> Services:
    return services_of(request)


async def tenant(request: Request) -> str:
    return tenant_of(request)


async def admin(request: Request) -> bool:
    """Whether the key may see every tenant's reports (gateway.py: an admin key, or no keys at all)."""
    return bool(request.scope.get("state", {}).get("admin", True))


@dataclass
class Chat:
    """What a chat route works with: the app's services and its request as the pipeline sees it."""

    services: Services
    call: Call


def chat(route: str) -> Any:
    """One dependency per chat request (each dependency FastAPI resolves costs CPU on the hot path):
    the services and the pipeline's Call (tenant, attempts, the client's disconnect), `route` naming it
    for feedback."""

    async def made(request: Request) -> Chat:
        call = Call(route, tenant_of(request), attempts_of(request), request.is_disconnected)
        return Chat(services_of(request), call)

    return Depends(made)


ServicesDep = Annotated[Services, Depends(services)]
TenantDep = Annotated[str, Depends(tenant)]
AdminDep = Annotated[bool, Depends(admin)]
