"""Kopf handlers: read the indexes, compare, write. No decisions live here.

Level-based: indexes hold every LocalLLM and every labelled child (Deployment,
Pod, PVC, Service) as the watches report them, so deriving a status costs no
API call. A LocalLLM's spec change (or the operator's start) applies the
children whose hash differs; any child event recomputes the owner's status and
writes it only when it changed. No finalizer: owner references let the garbage
collector remove children, and deletion is never blocked by a dead operator.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections import defaultdict
from typing import Any

import kopf
from pydantic import ValidationError

from sdc_operator import GROUP, PLURAL, VERSION, kube, metrics, timings
from sdc_operator.builders.common import OWNER_LABEL, LocalLLM, cache_claim_name
from sdc_operator.builders.service import endpoint_url
from sdc_operator.builders.workload import desired_children, engine_port
from sdc_operator.debounce import Debouncer
from sdc_operator.fit import fit_check
from sdc_operator.plan import plan, source_errors
from sdc_operator.publish import ENDPOINTS_KEY, endpoints_configmap, endpoints_document
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import Condition, semantic_errors
from sdc_operator.status import Observed, derive_status

SETTINGS = OperatorSettings()
log = logging.getLogger("sdc_operator")
_last_status: dict[tuple[str, str], dict[str, Any]] = {}
_apply_errors: dict[tuple[str, str], str] = {}
_published: dict[str, str | None] = {}
# Handlers and debounced flushes run in thread pools: one lock per LocalLLM serialises its
# status computation and write, so an older snapshot can never overwrite a newer one.
# Every per-LocalLLM dict here is emptied by `_forget` when the LocalLLM is deleted.
_locks: defaultdict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)
_publish_lock = threading.Lock()
_last_event_phase: dict[tuple[str, str], str] = {}  # the phase of the last event posted
_phase: dict[tuple[str, str], str] = {}  # the phase counted in the models-by-phase gauge
_bodies: dict[tuple[str, str], dict[str, Any]] = {}
_INDEXES: dict[str, Any] = {}
_status_debouncer = Debouncer(SETTINGS.status_debounce_s, lambda key: _flush_status(key), workers=8)
_publish_debouncer = Debouncer(SETTINGS.status_debounce_s, lambda key: _flush_publish(key), workers=1)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own events only, not every handler log line
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 20
    settings.peering.standalone = SETTINGS.standalone
    settings.peering.name = SETTINGS.peering_name
    settings.peering.mandatory = not SETTINGS.standalone
    settings.peering.lifetime = SETTINGS.peering_lifetime_s
    if not SETTINGS.standalone:
        kube.ensure_peering(SETTINGS.peering_name, SETTINGS.watch_namespaces)
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(SETTINGS.metrics_port)


# -- indexes -------------------------------------------------------------------------------------


def _projection(body: kopf.Body) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "uid", "generation", "annotations", "deletionTimestamp", "labels")
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


@kopf.index(GROUP, VERSION, PLURAL)
async def llm_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): _projection(body)}


def _child_key(namespace: str, labels: kopf.Labels) -> tuple[str, str]:
    return namespace, str(labels[OWNER_LABEL])


@kopf.index("apps", "v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
async def deployment_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(body)}


@kopf.index("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
async def pod_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    timings.observe(dict(body))  # model download and load time, once per pod
    return {_child_key(namespace, labels): _projection(body)}


@kopf.index("v1", "persistentvolumeclaims", labels={OWNER_LABEL: kopf.PRESENT})
async def claim_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(body)}


@kopf.index("v1", "services", labels={OWNER_LABEL: kopf.PRESENT})
async def service_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(body)}


def _one(index: kopf.Index[Any, Any], key: tuple[str, str]) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


def _all(index: kopf.Index[Any, Any], key: tuple[str, str]) -> list[dict[str, Any]]:
    store = index.get(key)
    return list(store) if store else []


# -- reconcile children ----------------------------------------------------------------------


def _parse(body: dict[str, Any]) -> tuple[LocalLLM | None, list[str]]:
    try:
        llm = LocalLLM.from_body(body)
    except ValidationError as err:
        return None, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
    return llm, semantic_errors(llm.spec) + source_errors(llm.spec, SETTINGS)


def _observed_children(key: tuple[str, str], idx: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for name in ("deployment_index", "claim_index", "service_index"):
        for child in _all(idx[name], key):
            out[(child["kind"], child["metadata"]["name"])] = child
    return out


def reconcile_children(body: dict[str, Any], logger: logging.Logger | kopf.Logger, **idx: Any) -> None:
    with _locks[(body["metadata"]["namespace"], body["metadata"]["name"])]:
        _reconcile_children(body, logger, **idx)


def _reconcile_children(body: dict[str, Any], logger: logging.Logger | kopf.Logger, **idx: Any) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key = (namespace, name)
    started = time.monotonic()
    llm, errors = _parse(body)
    if errors or llm is None:
        # Nothing half-made: the serving objects go; a bound cache (downloaded weights) stays.
        for kind in ("Deployment", "Service"):
            kube.delete(kind, namespace, name)
        metrics.RECONCILES.labels("invalid").inc()
        refresh_status(namespace, name, body=body, **idx)
        return
    try:
        for action in plan(desired_children(llm, SETTINGS), _observed_children(key, idx)):
            kube.apply(action.obj)
            metrics.APPLIES.labels(action.key[0]).inc()
            log.info("applied %s/%s for %s/%s (%s)", *action.key, namespace, name, action.reason)
    except kube.ApiError as err:
        metrics.ERRORS.labels("apply").inc()
        if err.status in (400, 403, 422):
            _apply_errors[key] = f"the API server refused a child object: {err}"
            refresh_status(namespace, name, body=body, **idx)
            raise kopf.PermanentError(str(err)) from err
        raise kopf.TemporaryError(f"applying children failed: {err}", delay=5) from err
    _apply_errors.pop(key, None)
    metrics.RECONCILES.labels("ok").inc()
    metrics.DURATION.observe(time.monotonic() - started)
    refresh_status(namespace, name, body=body, **idx)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def localllm_changed(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    reconcile_children(_projection(body), logger, **_indexes(kwargs))


def _indexes(kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("llm_index", "deployment_index", "pod_index", "claim_index", "service_index")
    return {n: kwargs[n] for n in names}


@kopf.on.event("apps", "v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "persistentvolumeclaims", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "services", labels={OWNER_LABEL: kopf.PRESENT})
async def child_changed(
    event: dict[str, Any],
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    owner = str(labels[OWNER_LABEL])
    idx = _indexes(kwargs)
    llm = _one(idx["llm_index"], (namespace, owner))
    if llm is None or llm["metadata"].get("deletionTimestamp"):
        return
    if event.get("type") == "DELETED" and body.get("kind") in ("Deployment", "Service", "PersistentVolumeClaim"):
        owners = [o.get("uid") for o in body.get("metadata", {}).get("ownerReferences") or []]
        if llm["metadata"]["uid"] in owners:  # removed by hand, not by garbage collection: put it back
            logger.warning(f"{body['kind']} {body['metadata']['name']} was deleted; recreating it")
            await asyncio.to_thread(reconcile_children, llm, logger, **idx)
            return
    refresh_status(namespace, owner, body=llm, **idx)


# -- status ------------------------------------------------------------------------------------


def refresh_status(namespace: str, name: str, *, body: dict[str, Any], **idx: Any) -> None:
    """Schedule a status recomputation; bursts of child events collapse into one write."""
    _INDEXES.update(idx)
    _bodies[(namespace, name)] = body
    _status_debouncer.trigger((namespace, name))


def _flush_status(key: Any) -> None:
    namespace, name = key
    with _locks[key]:
        _refresh_status(namespace, name, body=_bodies.get(key, {}), **_INDEXES)


def _refresh_status(namespace: str, name: str, *, body: dict[str, Any], **idx: Any) -> None:
    key = (namespace, name)
    latest = _one(idx["llm_index"], key)
    if latest is not None:
        body = latest
    if not body or body["metadata"].get("deletionTimestamp"):
        return
    llm, errors = _parse(body)
    if key in _apply_errors:
        errors = [*errors, _apply_errors[key]]
    generation = int(body["metadata"].get("generation") or 1)
    current = dict(body.get("status") or {})
    previous = []
    for c in current.get("conditions") or []:
        try:
            previous.append(Condition.model_validate(c))
        except ValidationError:
            continue
    spec = llm.spec if llm else None
    port = engine_port(llm.spec.runtime) if llm and not errors else 0
    endpoint = endpoint_url(llm, port, SETTINGS.cluster_domain) if llm and port else ""
    observed = Observed(
        deployment=_one(idx["deployment_index"], key),
        pods=[p for p in _all(idx["pod_index"], key) if not p["metadata"].get("deletionTimestamp")],
        claim=next(
            (c for c in _all(idx["claim_index"], key) if llm and c["metadata"]["name"] == cache_claim_name(llm)), None
        ),
        claim_expected=not (spec and (spec.cache.existing_claim or spec.model.source)),
    )
    status = derive_status(
        generation=generation,
        desired_replicas=spec.replicas if spec else 0,
        endpoint=endpoint,
        served_name=spec.served_name if spec else "",
        observed=observed,
        spec_errors=errors,
        previous=previous,
        now=_now(),
        fit=fit_check(spec, SETTINGS) if spec else None,
    ).model_dump(by_alias=True, exclude_none=True)
    _track_phase(key, status["phase"])
    if status == _last_status.get(key) or (key not in _last_status and _same(status, current)):
        return
    try:
        kube.patch_status(namespace, name, status)
    except kube.ApiError as err:
        if err.status == 404:  # deleted since the event: nothing to report on
            _last_status.pop(key, None)
            return
        raise
    _last_status[key] = status
    metrics.STATUS_WRITES.inc()
    if status["phase"] != _last_event_phase.get(key, current.get("phase")):
        kind = "Warning" if status["phase"] in ("Failed", "Degraded") else "Normal"
        try:
            kube.post_event(namespace, name, str(body["metadata"]["uid"]), kind, status["phase"], status["message"])
        except kube.ApiError as err:  # an event is best effort: never fail the status for it
            metrics.ERRORS.labels("event").inc()
            log.warning("could not post an event for %s/%s: %s", namespace, name, err)
    _last_event_phase[key] = status["phase"]
    publish(idx["llm_index"])


def _same(new: dict[str, Any], current: dict[str, Any]) -> bool:
    return all(current.get(k) == v for k, v in new.items())


def _track_phase(key: tuple[str, str], phase: str) -> None:
    """Keep the models-by-phase gauge current in O(1) per status computation."""
    old = _phase.get(key)
    if old == phase:
        return
    if old is not None:
        metrics.MODELS.labels(old).dec()
    metrics.MODELS.labels(phase).inc()
    _phase[key] = phase


def _forget(key: tuple[str, str]) -> None:
    """A deleted LocalLLM leaves no state behind in this process."""
    phase = _phase.pop(key, None)
    if phase is not None:
        metrics.MODELS.labels(phase).dec()
    for state in (_last_status, _apply_errors, _last_event_phase, _bodies, _locks):
        state.pop(key, None)


def publish(index: kopf.Index[Any, Any]) -> None:
    """Schedule a write of the endpoints ConfigMap (coalesced; written only when its content changes)."""
    _INDEXES["llm_index"] = index
    _publish_debouncer.trigger("endpoints")


def _flush_publish(_: Any) -> None:
    with _publish_lock:
        _publish(_INDEXES["llm_index"], _last_status)


def _publish(index: kopf.Index[Any, Any], override: dict[tuple[str, str], dict[str, Any]]) -> None:
    llms = []
    for k, store in index.items():
        for item in store:
            if item["metadata"].get("deletionTimestamp"):
                continue
            llms.append({**item, "status": override.get(k, item.get("status"))})
    document = endpoints_document(llms)
    cm_key = f"{SETTINGS.endpoints_namespace}/{SETTINGS.endpoints_configmap}"
    if cm_key not in _published:
        data = kube.read_configmap_data(SETTINGS.endpoints_namespace, SETTINGS.endpoints_configmap)
        _published[cm_key] = (data or {}).get(ENDPOINTS_KEY)
    if _published[cm_key] == document:
        return
    try:
        kube.apply(endpoints_configmap(SETTINGS.endpoints_configmap, SETTINGS.endpoints_namespace, document))
    except kube.ApiError:
        metrics.ERRORS.labels("publish").inc()
        _publish_debouncer.trigger("endpoints")  # try again shortly
        raise
    _published[cm_key] = document


@kopf.on.event(GROUP, VERSION, PLURAL)
async def localllm_event(event: dict[str, Any], namespace: str, name: str, **kwargs: Any) -> None:
    """Routing weights and deletions change the published endpoints without touching children."""
    if event.get("type") == "DELETED":
        _forget((namespace, name))
    publish(kwargs["llm_index"])
