"""Every error as one JSON shape (`{"error": {"message", "code", ...}}`), encodable whatever it echoes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sdc_orchestrator import metrics
from sdc_orchestrator.backend_errors import public_refusal
from sdc_orchestrator.failures import ClientRequestError, NoRouteError
from sdc_orchestrator.limits import InputError


def safe_text(text: str) -> str:
    """Text that can be encoded whatever it echoes (a lone surrogate becomes `\\udxxx`): an error never fails."""
    return text.encode("utf-8", "backslashreplace").decode()


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": safe_text(message), "code": status, **extra}}, status)


def invalid_field(field: str, message: str) -> RequestValidationError:
    """A 422 naming a body field, as pydantic's own refusals do."""
    return RequestValidationError([{"loc": ("body", field), "msg": message}])


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error(422 if problems else 400, "; ".join(problems) or "invalid request")

    @app.exception_handler(InputError)
    async def refused_input(_: Request, exc: InputError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own 400 for a body it cannot parse (e.g. JSON nested 100k deep) says nothing about why.
        detail = exc.detail if exc.detail != "There was an error parsing the body" else "the body is not valid JSON"
        return JSONResponse(
            {"error": {"message": safe_text(str(detail)), "code": exc.status_code}},
            exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(NoRouteError)
    async def no_route(_: Request, exc: NoRouteError) -> JSONResponse:
        metrics.REQUESTS.labels("none", "none", f"http_{exc.status}").inc()
        response = error(exc.status, str(exc), tried=exc.tried)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(ClientRequestError)
    async def refused(_: Request, exc: ClientRequestError) -> JSONResponse:
        metrics.REQUESTS.labels("none", "none", f"http_{exc.status}").inc()
        if exc.own and isinstance(exc.body, dict):  # the orchestrator's own words (fitting.py): as written
            return JSONResponse(json.loads(safe_text(json.dumps(exc.body, ensure_ascii=False))), exc.status)
        # Never the backend's body verbatim: it names the backend's address and paths (backend_errors).
        return JSONResponse(public_refusal(exc.status, exc.body), exc.status)
