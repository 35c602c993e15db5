"""What a request that cannot be served raises: the route's answer is a 4xx or 5xx naming why (api/errors.py).

Below every ring that raises them (upstream, scaling, the pipeline, the routes), so none of those needs
another's module to say "no".
"""

from __future__ import annotations

from typing import Any


class NoRouteError(Exception):
    """Nothing can serve: unknown model or provider, or every attempt failed."""

    def __init__(
        self, status: int, message: str, tried: list[dict[str, str]] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tried = tried or []
        self.retry_after = retry_after  # seconds, sent as Retry-After (a model scaling from zero)


class ClientRequestError(Exception):
    """The backend refused the request itself (a 4xx that another backend would refuse too).

    `own`: the body is the orchestrator's own words (a request that cannot fit the model, a model the backend
    does not have, naming what it has), shown as written; a backend's own body is rewritten (backend_errors).
    """

    def __init__(self, status: int, body: Any, *, own: bool = False) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.own = own
