"""Which model each chat endpoint serves: configured, or asked of the backend once (`GET /models`).

A configured name is matched to what the backend serves (`gemma-2-9b-it` -> `google/gemma-2-9b-it`,
fitting.Fitter.served_name). An endpoint without one is asked once; the answer is kept, and a failed
discovery is not retried for SDC_MODEL_DISCOVERY_RETRY_S, so a backend that cannot name its model does not
cost every request a round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp

from sdc_orchestrator.backends import Endpoint, EndpointRegistry
from sdc_orchestrator.fitting import Fitter
from sdc_orchestrator.router import UpstreamError
from sdc_orchestrator.sampling import DEFAULT_MODEL_NAME

log = logging.getLogger("sdc_orchestrator.upstream")

DISCOVERY_ERRORS = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
)


class ModelDiscovery:
    def __init__(
        self,
        registry: EndpointRegistry,
        http: Callable[[], aiohttp.ClientSession],
        headers: Callable[[Endpoint], dict[str, str]],
        fitter: Fitter,
        retry_s: float,
    ) -> None:
        self.registry = registry
        self._http = http
        self._headers = headers
        self.fitter = fitter
        self.retry_s = retry_s
        self.models: dict[str, str] = {}
        self.failed_until: dict[str, float] = {}

    def known(self, endpoint: Endpoint) -> str:
        """The endpoint's model if configured or already discovered, else ''."""
        return endpoint.model or self.models.get(endpoint.name, "")

    async def model_of(self, endpoint: Endpoint) -> str:
        """The model to ask for; raises UpstreamError when it cannot be learned (now or recently)."""
        if endpoint.model:
            return await self.fitter.served_name(endpoint, endpoint.model)
        if endpoint.name in self.models:
            return self.models[endpoint.name]
        if time.monotonic() < self.failed_until.get(endpoint.name, 0.0):
            raise UpstreamError(endpoint, "model discovery failed recently")
        try:
            self.models[endpoint.name] = await self._ask(endpoint)
        except DISCOVERY_ERRORS as err:
            log.warning("model discovery on %s failed: %s: %s", endpoint.name, type(err).__name__, err)
            self.failed_until[endpoint.name] = time.monotonic() + self.retry_s
            raise UpstreamError(endpoint, "model discovery failed") from None
        return self.models[endpoint.name]

    async def _ask(self, endpoint: Endpoint) -> str:
        async with self._http().get(
            f"{endpoint.base_url}/models", headers=self._headers(endpoint), timeout=aiohttp.ClientTimeout(total=3)
        ) as resp:
            if resp.status in (404, 405):  # no /v1/models: the guide's default name
                return DEFAULT_MODEL_NAME
            resp.raise_for_status()
            data = await resp.json(content_type=None)
        listed = data.get("data") or []
        return str(listed[0]["id"]) if listed else DEFAULT_MODEL_NAME

    async def served(self) -> dict[str, str | None]:
        """Endpoint name -> model for every chat endpoint (a backend that cannot say: its configured name)."""
        out: dict[str, str | None] = {}
        for endpoint in self.registry.all("chat"):
            try:
                out[endpoint.name] = await self.model_of(endpoint)
            except UpstreamError:
                out[endpoint.name] = endpoint.model
        return out
