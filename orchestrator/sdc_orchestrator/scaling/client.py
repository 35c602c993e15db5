"""The orchestrator's one write to Kubernetes: a LocalLLM's /scale subresource.

The orchestrator is the single writer of scale-from-zero (the chart runs one orchestrator and grants it
`patch` on `localllms/scale` and nothing else). The write is a JSON patch that tests spec.replicas is
still 0 before it sets 1: if a person, an HPA or an earlier write already scaled the model, the API server
refuses the test (422) and nothing changes, so a late or repeated ask never scales a running model down.
The field manager is `sdc-autoscaler`: the operator's status names it when it says why a model is at zero.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import aiohttp
from prometheus_client import Counter

from sdc_orchestrator.kube_api import ApiAccess

log = logging.getLogger("sdc_orchestrator.scaling")
# The same name the operator reads from a LocalLLM's managedFields (sdc_operator.spec.AUTOSCALER_MANAGER):
# the components do not import each other, so it is written twice.
FIELD_MANAGER = "sdc-autoscaler"
GROUP_VERSION = "llm.sdc.dev/v1alpha1"
SCALE_WRITES = Counter(
    "sdc_orchestrator_scale_writes_total",
    "Writes to a LocalLLM's /scale subresource by outcome (scaled, already, failed)",
    ["direction", "outcome"],
)
Outcome = Literal["scaled", "already", "failed"]


class ScaleClient:
    def __init__(self, api_url: str, token_file: Path | None = None, ca_file: Path | None = None) -> None:
        self.access = ApiAccess(api_url.rstrip("/"), token_file, ca_file)
        self._session: aiohttp.ClientSession | None = None

    @property
    def api_url(self) -> str:
        return self.access.server

    @property
    def token_file(self) -> Path | None:
        return self.access.token_file

    @property
    def ca_file(self) -> Path | None:
        return self.access.ca_file

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self.access.session(aiohttp.ClientTimeout(total=10))
        return self._session

    def _path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/localllms/{name}/scale"

    async def set_replicas(self, namespace: str, name: str, expected: int, replicas: int) -> Outcome:
        """spec.replicas `expected` -> `replicas`, only if it is still `expected`; never raises."""
        patch = [
            # A Scale's spec.replicas is omitted when 0 (autoscaling/v1 `omitempty`), so the test is on the
            # whole spec, which holds nothing else: {} at zero, {"replicas": N} otherwise.
            {"op": "test", "path": "/spec", "value": {"replicas": expected} if expected else {}},
            {"op": "add", "path": "/spec/replicas", "value": replicas},
        ]
        direction = "up" if replicas > expected else "down"
        outcome: Outcome
        try:
            async with self.access.request(
                self._http(),
                "PATCH",
                self._path(namespace, name),
                content_type="application/json-patch+json",
                params={"fieldManager": FIELD_MANAGER},
                json=patch,
            ) as resp:
                text = await resp.text()
                if resp.status < 300:
                    outcome = "scaled"
                elif resp.status in (409, 422) or "test operation" in text.lower():
                    outcome = "already"  # someone else changed it first: theirs stands
                else:
                    log.warning("scale %s/%s to %d: HTTP %d: %s", namespace, name, replicas, resp.status, text[:300])
                    outcome = "failed"
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            log.warning("scale %s/%s to %d failed: %s: %s", namespace, name, replicas, type(err).__name__, err)
            outcome = "failed"
        SCALE_WRITES.labels(direction, outcome).inc()
        log.info("scale %s/%s %d -> %d: %s", namespace, name, expected, replicas, outcome)
        return outcome

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
