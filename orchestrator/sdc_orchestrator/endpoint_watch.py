"""Follow the operator's endpoints ConfigMap through the Kubernetes API: a new or gone model in ~1 s.

Why: a ConfigMap mounted as a file reaches the pod only at the kubelet's next
sync, 60-90 s after the operator wrote it; routing to a pod that is gone, or
not to one that is Ready, for that long is what per-pod routing and
scale-from-zero cannot live with. So in a cluster the orchestrator lists and
then watches that one ConfigMap (a field selector on its name: the chart's Role
grants get/list/watch on it by resourceNames, nothing else) with its pod's
ServiceAccount token, and hands every version to the registry at once.

The mounted file stays: it serves where there is no API (local development,
the token turned off), and the registry falls back to it whenever the watch is
down (it rereads the file only then). The token is reread for every request:
projected tokens rotate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

import aiohttp

from sdc_orchestrator.kube_api import SERVICE_ACCOUNT, ApiAccess
from sdc_orchestrator.settings import OrchestratorSettings

__all__ = ["SERVICE_ACCOUNT", "ApiAccess", "ConfigMapWatch", "document_of", "start_endpoint_watch"]
log = logging.getLogger("sdc_orchestrator.endpoint_watch")
ENDPOINTS_KEY = "endpoints.json"  # sdc_operator.publish.ENDPOINTS_KEY
WATCH_TIMEOUT_S = 300  # the API server ends a watch after this; we start the next one at once
BACKOFF_S = (1.0, 2.0, 5.0)


class DocumentSink(Protocol):
    def set_api_document(self, document: str | None) -> None: ...
    def api_down(self) -> None: ...


def document_of(configmap: dict[str, Any] | None) -> str | None:
    if configmap is None:
        return None
    data = configmap.get("data") or {}
    value = data.get(ENDPOINTS_KEY)
    return str(value) if value is not None else None


class ConfigMapWatch:
    """List, then watch, one ConfigMap; every version goes to `sink` as the endpoints document."""

    def __init__(self, sink: DocumentSink, access: ApiAccess, namespace: str, name: str) -> None:
        self.sink, self.access, self.namespace, self.name = sink, access, namespace, name
        self.path = f"/api/v1/namespaces/{namespace}/configmaps"
        self.selector = f"metadata.name={name}"

    async def run(self) -> None:
        failures = 0
        # No total timeout: a watch is silent for as long as nothing changes (the server ends it).
        # read_bufsize: a watch event is one line holding the whole ConfigMap (up to 1 MiB).
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        async with self.access.session(timeout, read_bufsize=2**21) as client:
            while True:
                try:
                    version = await self._list(client)
                    failures = 0
                    await self._watch(client, version)
                except asyncio.CancelledError:
                    raise
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as err:
                    self.sink.api_down()
                    delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                    failures += 1
                    log.warning(
                        "endpoints watch on %s/%s failed (%s); the mounted file serves, retrying in %.0fs",
                        self.namespace,
                        self.name,
                        err,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def _list(self, client: aiohttp.ClientSession) -> str:
        params = {"fieldSelector": self.selector}
        async with self.access.request(
            client, "GET", self.path, params=params, timeout=aiohttp.ClientTimeout(total=20)
        ) as response:
            response.raise_for_status()
            body = await response.json()
        items = body.get("items") or []
        self.sink.set_api_document(document_of(items[0] if items else None))
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, client: aiohttp.ClientSession, version: str) -> None:
        params = {
            "fieldSelector": self.selector,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        async with self.access.request(client, "GET", self.path, params=params) as response:
            response.raise_for_status()
            async for raw in response.content:  # one JSON event per line
                if not raw.strip():
                    continue
                event = json.loads(raw)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    self.sink.set_api_document(document_of(obj))
                elif kind == "DELETED":
                    self.sink.set_api_document(None)
                elif kind == "ERROR":  # 410 Gone: our version is too old; list again
                    raise ValueError(f"watch error: {obj.get('message', obj)}")


def start_endpoint_watch(
    settings: OrchestratorSettings, sink: DocumentSink, access: ApiAccess | None = None
) -> asyncio.Task[None] | None:
    """Start following the endpoints ConfigMap when it is named and the pod can reach the API."""
    name, namespace = settings.sdc_endpoints_configmap, settings.sdc_namespace
    access = access or ApiAccess.in_cluster()
    if not name or not namespace or access is None:
        return None
    log.info("following ConfigMap %s/%s through the API", namespace, name)
    return asyncio.create_task(ConfigMapWatch(sink, access, namespace, name).run(), name="sdc-endpoint-watch")
