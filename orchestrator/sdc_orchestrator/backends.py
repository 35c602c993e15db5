"""Where requests can go: endpoints from the seed's variables and from the operator.

Every backend speaks the OpenAI protocol (vLLM, Ollama's /v1, sdc-runtime,
Gemini's OpenAI-compatible endpoint), so an endpoint is just a base URL, a
model name, a weight and an optional key. In a cluster the operator's
ConfigMap arrives through the API within a second (endpoint_watch.py hands each
version to `set_api_document`); the same ConfigMap mounted as a file serves
without an API and whenever the watch is down: `EndpointRegistry.refresh`
rereads it when its mtime changes, so new models go live without a restart.

Tenancy: each published entry says which namespace (and routing pool) its
LocalLLM lives in. The registry keeps only the namespaces and pool this
release serves (SDC_ROUTE_NAMESPACES, SDC_ROUTE_POOL; by default its own
namespace, SDC_NAMESPACE, and no pool), whatever the file holds, and a model
from another namespace is named `<namespace>/<model>`, so the same served name
in two namespaces never becomes one routing pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sdc_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("sdc_orchestrator.backends")
PROVIDERS = ("ollama", "vllm", "transformers", "gemini")


@dataclass(frozen=True)
class Endpoint:
    name: str
    provider: str
    base_url: str
    model: str | None  # None: ask the backend's /v1/models once
    weight: int = 100
    role: str = "chat"
    api_key: str | None = None
    namespace: str | None = None  # where a published LocalLLM lives; None for the seed's variables
    pool: str | None = None
    # Replicas (one published entry per ready pod): the engine's /metrics, and the published entry's own
    # name (its LocalLLM's), which `name` extends with the pod's to keep every replica's health apart.
    metrics_url: str | None = None
    origin: str | None = None

    def __repr__(self) -> str:  # never print the key
        return f"Endpoint({self.name}, {self.provider}, {self.base_url}, model={self.model})"


def seed_endpoints(settings: OrchestratorSettings) -> list[Endpoint]:
    """The endpoints the seed's variables describe: the chosen local service, and Gemini if keyed."""
    out = []
    local = {
        "ollama": f"http://{settings.ollama_host}:{settings.ollama_port}/v1",
        "vllm": f"http://{settings.vllm_host}:{settings.vllm_port}/v1",
        "transformers": f"http://{settings.transformers_host}:{settings.transformers_port}/v1",
    }
    services: list[str] = [settings.llm_service_type] if settings.llm_service_type in local else []
    if settings.llm_service_type == "auto":  # the migration split: each local service set in the env
        services = [s for s in local if settings.local_service_configured(s)]
    for service in services:
        out.append(Endpoint(f"env/{service}", service, local[service], settings.llm_model_name))
    if settings.llm_service_type not in ("auto", "none"):
        # The seed's code built each client from its own host variables, so `provider: "vllm"` reached
        # VLLM_HOST whatever LLM_SERVICE_TYPE said. Such a service is reachable by name (and as a
        # fallback) but takes no share of unqualified traffic (weight 0), and it names its own model
        # (LLM_MODEL_NAME describes LLM_SERVICE_TYPE's).
        for service in local:
            if service != settings.llm_service_type and settings.local_service_configured(service):
                out.append(Endpoint(f"env/{service}", service, local[service], None, weight=0))
    if settings.gemini_api_key is not None:
        out.append(
            Endpoint(
                "env/gemini",
                "gemini",
                settings.gemini_base_url.rstrip("/"),
                settings.gemini_model_name,
                weight=settings.gemini_weight,
                api_key=settings.gemini_api_key.get_secret_value(),
            )
        )
    return out


@dataclass(frozen=True)
class Dormant:
    """A published LocalLLM with no ready pod (the document's `unready`): at zero, or starting."""

    name: str  # <namespace>/<LocalLLM>
    namespace: str
    local_llm: str
    provider: str
    model: str
    role: str = "chat"
    pool: str | None = None
    replicas: int = 0
    at_zero: bool = True
    phase: str = "Pending"


@dataclass(frozen=True)
class Autoscale:
    """A published LocalLLM's spec.autoscaling, what the orchestrator's scale-down needs of it."""

    min_replicas: int
    scale_down_delay_s: float
    max_replicas: int = 1
    target_waiting: float = 4.0


def published_autoscaling(path: Path | str) -> dict[str, Autoscale]:
    """`name` -> autoscaling of the published entries that carry it (an older operator publishes none);
    `path` a file or the document's text."""
    out = {}
    for item in json.loads(path.read_text() if isinstance(path, Path) else path).get("endpoints", []):
        auto = item.get("autoscaling")
        if isinstance(auto, dict) and item.get("name"):
            out[str(item["name"])] = Autoscale(
                int(auto.get("minReplicas", 1)),
                float(auto.get("scaleDownDelaySeconds", 300)),
                int(auto.get("maxReplicas", 1)),
                float(auto.get("targetWaitingPerReplica", 4)),
            )
    return out


def published_unready(
    path: Path | str, namespaces: frozenset[str] | None = None, pool: str | None = None
) -> list[Dormant]:
    """The `unready` entries meant for this release; a document without them (an older operator) has none;
    `path` a file or the document's text."""
    data = json.loads(path.read_text() if isinstance(path, Path) else path)
    out = []
    for item in data.get("unready") or []:
        namespace = str(item.get("namespace") or "")
        if str(item.get("runtime")) not in PROVIDERS or not item.get("model") or not item.get("localLLM"):
            continue
        if int(item.get("weight", 100)) <= 0:  # drained (routing.weight 0): a model turned off is not woken
            continue
        if (namespaces is not None and namespace not in namespaces) or (item.get("pool") or None) != (pool or None):
            continue
        out.append(
            Dormant(
                str(item["name"]),
                namespace,
                str(item["localLLM"]),
                str(item["runtime"]),
                str(item["model"]),
                str(item.get("role", "chat")),
                item.get("pool") or None,
                int(item.get("replicas", 0)),
                bool(item.get("atZero", False)),
                str(item.get("phase", "Pending")),
            )
        )
    return out


def published_endpoints(
    path: Path | str, namespaces: frozenset[str] | None = None, pool: str | None = None
) -> list[Endpoint]:
    """The entries of the operator's document (a file, or its text) meant for this release (namespaces None = any)."""
    data = json.loads(path.read_text() if isinstance(path, Path) else path)
    out = []
    for item in data.get("endpoints", []):
        runtime = str(item.get("runtime"))
        if runtime not in PROVIDERS:
            continue
        namespace = item.get("namespace") or str(item["name"]).partition("/")[0]
        if namespaces is not None and namespace not in namespaces:
            continue
        if (item.get("pool") or None) != (pool or None):
            continue
        replica = item.get("replica")
        out.append(
            Endpoint(
                f"{item['name']}/{replica}" if replica else str(item["name"]),
                runtime,
                str(item["baseUrl"]).rstrip("/"),
                item.get("model"),
                int(item.get("weight", 100)),
                str(item.get("role", "chat")),
                namespace=namespace,
                pool=item.get("pool") or None,
                metrics_url=str(item["metricsUrl"]) if item.get("metricsUrl") else None,
                origin=str(item["name"]),
            )
        )
    return out


class EndpointRegistry:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self._seed = seed_endpoints(settings)
        self._published: list[Endpoint] = []
        self._unready: list[Dormant] = []
        self._autoscaling: dict[str, Autoscale] = {}
        self._mtime: float | None = None
        self._from_api = False  # a live watch feeds _published; the file waits until it is down
        # Set (and replaced) at every document from the API: requests held for a model at zero wake on it
        # at once instead of at their next poll (scaling/waker.py).
        self._changed = asyncio.Event()
        self.refresh()

    def set_api_document(self, document: str | None) -> None:
        """The ConfigMap's endpoints document as the API has it now (None: the ConfigMap or key is gone)."""
        namespaces, pool = self.settings.route_namespaces(), self.settings.sdc_route_pool
        try:
            published = published_endpoints(document, namespaces, pool) if document is not None else []
            # The models at zero and the autoscaling bounds come from the same document: without them a
            # request for a model at zero was a 404 and idle models never scaled down once the watch ran.
            unready = published_unready(document, namespaces, pool) if document is not None else []
            autoscaling = published_autoscaling(document) if document is not None else {}
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring an unreadable endpoints document from the API: %s", err)
            return
        if not self._from_api or published != self._published:
            log.info("endpoints from the API: %d published", len(published))
        self._published, self._unready, self._autoscaling, self._from_api = published, unready, autoscaling, True
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """The event the API's next document sets. Taken before a check that awaits (and passed to
        `changed` after it), a document that arrives during the check still wakes the caller at once."""
        return self._changed

    async def changed(self, timeout_s: float, event: asyncio.Event | None = None) -> None:
        """Return when the API delivers the next document (after `event` was taken: `next_change`), or
        after `timeout_s` (the mounted file is only reread when asked: a caller that polls it comes back
        at least this often)."""
        event = event or self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return

    def api_down(self) -> None:
        """The watch stopped: the mounted file (reread at once) serves until it is back."""
        if self._from_api:
            self._from_api, self._mtime = False, None

    def refresh(self) -> None:
        path = self.settings.sdc_endpoints_file
        if path is None or self._from_api:
            return
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            self._published, self._unready, self._autoscaling, self._mtime = [], [], {}, None
            return
        if mtime == self._mtime:
            return
        try:
            self._published = published_endpoints(path, self.settings.route_namespaces(), self.settings.sdc_route_pool)
            self._unready = published_unready(path, self.settings.route_namespaces(), self.settings.sdc_route_pool)
            self._autoscaling = published_autoscaling(path)
            self._mtime = mtime
            log.info("loaded %d published endpoints from %s", len(self._published), path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable endpoints file %s: %s", path, err)

    def all(self, role: str = "chat") -> list[Endpoint]:
        self.refresh()
        return [e for e in (*self._published, *self._seed) if e.role == role]

    def model_id(self, endpoint: Endpoint, served: str | None) -> str | None:
        """The name clients use for an endpoint's model: `<namespace>/<model>` outside the home namespace.

        Without SDC_NAMESPACE (local development, no cluster) names stay as served.
        """
        home = self.settings.sdc_namespace
        if served and home and endpoint.namespace and endpoint.namespace != home:
            return f"{endpoint.namespace}/{served}"
        return served

    def autoscaling(self, origin: str) -> Autoscale | None:
        """The autoscaling of the published LocalLLM `origin` (`<namespace>/<name>`), if it has one."""
        return self._autoscaling.get(origin)

    def dormant(self, model: str, role: str = "chat") -> Dormant | None:
        """The published model without a ready pod that clients call `model`, if any (scale from zero)."""
        self.refresh()
        home = self.settings.sdc_namespace
        for item in self._unready:
            named = f"{item.namespace}/{item.model}" if home and item.namespace != home else item.model
            if item.role == role and named == model:
                return item
        return None

    def for_provider(self, provider: str, role: str = "chat") -> list[Endpoint]:
        return [e for e in self.all(role) if e.provider == provider]
