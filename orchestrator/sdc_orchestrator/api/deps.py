"""Typed dependencies: what a route may ask for (the app's services, the caller's tenant, its attempts)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request

from sdc_orchestrator.gateway import DEFAULT_TENANT
from sdc_orchestrator.pipeline import Call
from sdc_orchestrator.services import Services
from sdc_orchestrator.upstream import Attempts

USER_HEADER = "x-sdc-user"


def services(request: Request) -> Services:
    return cast(Services, request.app.state.sdc)


def tenant(request: Request) -> str:
    """The tenant the gateway found for the request's key (`default` with no keys file)."""
    return str(request.scope.get("state", {}).get("tenant") or DEFAULT_TENANT)


def admin(request: Request) -> bool:
    """Whether the key may see every tenant's reports (gateway.py: an admin key, or no keys at all)."""
    return bool(request.scope.get("state", {}).get("admin", True))


def attempts(request: Request) -> Attempts:
    """The request's attempts, opened (and closed when the request ends) by api/attempts.py's middleware."""
    found = request.scope.get("state", {}).get("attempts")
    if not isinstance(found, Attempts):
        raise RuntimeError(f"no attempts for {request.url.path}: AttemptsMiddleware must cover the route")
    return found


def call_for(route: str) -> Any:
    """A dependency giving the route's pipeline Call (its tenant, attempts and the client's disconnect)."""

    def made(request: Request, caller: TenantDep, tried: AttemptsDep) -> Call:
        return Call(route, caller, tried, request.is_disconnected)

    return Depends(made)


ServicesDep = Annotated[Services, Depends(services)]
TenantDep = Annotated[str, Depends(tenant)]
AdminDep = Annotated[bool, Depends(admin)]
AttemptsDep = Annotated[Attempts, Depends(attempts)]
