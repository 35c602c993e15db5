"""Kopf's entry points: the startup and cleanup, the indexes and the event handlers. No decisions live here.

Each handler reads the indexes, hands the work to the ring below it (the
reconciler `reconcile`/`retry`, the status writer, the publisher) and returns.
A LocalLLM event with a generation this process has not reconciled (a new
spec, or the first event after the operator's start) applies the children that
drifted from the spec; any child event checks that child for drift (a hand
edit, a deletion) and recomputes the owner's status. A failed reconcile is
retried on a timer until it succeeds (`retry`).

Only Kopf's event handlers and indexes are used, none of its change-detecting
handlers (on.create/update/resume): those need a copy of each object's last
handled spec, written to the object as an annotation (one more write per
change) and deep-copied from every event's body, children included.

One concurrency model: everything runs on Kopf's event loop, API calls
included (`kube`: asynchronous, each with a timeout; no worker threads).
Per-operator state and the settings live in one `State` in Kopf's operator
memo (`state`), never in module globals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import kopf

from sdc_operator import GROUP, PLURAL, VERSION, kube, publisher, status_writer, timings
from sdc_operator.builders.common import OWNER_LABEL
from sdc_operator.download_watch import peering_active, watch_downloads
from sdc_operator.indexes import CHILD_INDEXES, CHILD_RESOURCES, every, one, own_deployment, projection, remember
from sdc_operator.plan import manually_deleted, owns
from sdc_operator.publish import pod_ready
from sdc_operator.reconcile import drifted
from sdc_operator.retry import reconcile_or_retry
from sdc_operator.settings import OperatorSettings
from sdc_operator.state import Key, State, spec_version
from sdc_operator.triggers import first_replica_ready, spec_pending


class NoDiffBase(kopf.DiffBaseStorage):
    """No change-detecting handlers, so no diff base: Kopf would otherwise deep-copy every event's body
    (a Pod's included) to build one, and write it to each LocalLLM as an annotation."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _state(memo: kopf.Memo) -> State:
    state: State = memo["sdc_state"]
    return state


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings_ = OperatorSettings()  # from the environment, once: everything below reads them from the State
    # No handler needs a finalizer or handling progress, so Kopf adds none and stores none; the finalizer's
    # name is still ours, so that Kopf never strips another Kopf operator's default one from what we watch.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # our own events only, not every handler log line
    # Children are watched through a server-side label selector: the API server sends only the objects
    # this operator labels, not every Pod, Deployment, Service and claim of the cluster (Kopf's handler
    # filters alone would parse and drop each of them). The handlers keep their own filter too.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = OWNER_LABEL
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330  # a silent connection (a stopped API server) is dropped and retried
    settings.watching.connect_timeout = settings_.api_timeout_s
    settings.networking.request_timeout = settings_.api_timeout_s * 3
    # Retries of a failing API (a stopped API server): short and flat, so the watches are back within
    # seconds of /readyz instead of after a growing backoff; ten minutes of them before Kopf gives up.
    settings.networking.error_backoffs = (0.5, 1, 2, 3, *([5] * 120))
    settings.peering.standalone = settings_.standalone
    settings.peering.name = settings_.peering_name
    settings.peering.mandatory = not settings_.standalone
    settings.peering.lifetime = settings_.peering_lifetime_s
    await kube.connect(settings_.api_timeout_s)
    state = memo["sdc_state"] = State(settings_, flush_status=status_writer.flush, flush_publish=publisher.flush)
    if settings_.download_progress_interval_s:
        # Kept in the memo: the loop holds only a weak reference to a task.
        active = (
            None
            if settings_.standalone
            else functools.partial(
                peering_active, settings_.peering_name, settings_.watch_namespaces, settings.peering.priority
            )
        )
        memo["sdc_download_watch"] = asyncio.get_running_loop().create_task(
            watch_downloads(
                state.indexes, state.downloads, state.refresh, settings_.download_progress_interval_s, active
            )
        )
    if not settings_.standalone:
        await kube.ensure_peering(settings_.peering_name, settings_.watch_namespaces)
    if settings_.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings_.metrics_port)


@kopf.on.cleanup()
async def close_api(memo: kopf.Memo, **_: Any) -> None:
    watcher = memo.get("sdc_download_watch")
    if watcher is not None:
        watcher.cancel()
    await kube.close()  # the API session's connections, before the loop goes


# -- indexes: the watches' projections (`indexes`), keyed by (namespace, owner) --------------------


@kopf.index(GROUP, VERSION, PLURAL)
async def llm_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): projection(dict(body))}


def _child_key(namespace: str, labels: kopf.Labels) -> Key:
    return namespace, str(labels[OWNER_LABEL])


@kopf.index("apps", "v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
async def deployment_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): projection(dict(body))}


@kopf.index("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
async def pod_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    timings.observe(dict(body))  # model download and load time, once per pod
    return {_child_key(namespace, labels): projection(dict(body))}


@kopf.index("v1", "persistentvolumeclaims", labels={OWNER_LABEL: kopf.PRESENT})
async def claim_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): projection(dict(body))}


@kopf.index("v1", "services", labels={OWNER_LABEL: kopf.PRESENT})
async def service_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): projection(dict(body))}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels={OWNER_LABEL: kopf.PRESENT})
async def policy_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): projection(dict(body))}


# -- events ----------------------------------------------------------------------------------


@kopf.on.event("apps", "v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "persistentvolumeclaims", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "services", labels={OWNER_LABEL: kopf.PRESENT})
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels={OWNER_LABEL: kopf.PRESENT})
async def child_changed(
    event: dict[str, Any],
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    state = _state(memo)
    owner = str(labels[OWNER_LABEL])
    idx = remember(state, kwargs)
    llm = one(idx["llm_index"], (namespace, owner))
    if llm is None or llm["metadata"].get("deletionTimestamp"):
        return
    child = projection(dict(body))
    if child.get("kind") == "Pod":
        state.publish_soon()  # a pod ready, gone or re-addressed changes the published replicas
    uid = str(llm["metadata"]["uid"])
    repair = ""
    if event.get("type") == "DELETED":
        child_uid = str(child["metadata"].get("uid") or "")
        pruned = state.pruned.get((namespace, owner), set())
        if child_uid in pruned:
            pruned.discard(child_uid)  # our own prune (reconcile._prune), not a person's deletion
        elif manually_deleted(child, uid, owner):
            repair = f"{child['kind']} {child['metadata']['name']} was deleted"
    elif child.get("kind") in CHILD_INDEXES and owns(child, uid, owner) and drifted(state, llm, child):
        repair = f"{child['kind']} {child['metadata']['name']} was changed by hand"
    if repair:
        logger.warning(f"{repair}; repairing it")
        await reconcile_or_retry(state, llm, idx, repair)
        return
    key = (namespace, owner)
    if _first_replica(state, key, llm, child, event, uid):
        state.refresh_now(key)  # requests may be held for this model (scale from zero): no coalescing delay
        return
    state.refresh(key)


def _first_replica(
    state: State, key: Key, llm: dict[str, Any], child: dict[str, Any], event: dict[str, Any], uid: str
) -> bool:
    """The LocalLLM's own Deployment and pods report its first ready replica (`triggers.first_replica_ready`),
    on whichever of their events arrives second."""
    if event.get("type") == "DELETED" or child.get("kind") not in ("Deployment", "Pod"):
        return False
    idx = state.indexes
    deployment = own_deployment(idx, key, uid)
    if deployment is None:
        return False
    shown = state.last_status.get(key, llm.get("status"))
    ready_count = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return first_replica_ready(shown, ready_count, any(pod_ready(p) for p in every(idx["pod_index"], key)))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def localllm_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A new spec reconciles the children; any event recomputes the status (a status edited by anyone
    else is put back to what the cluster shows) and the published endpoints (routing weights)."""
    state = _state(memo)
    idx = remember(state, kwargs)
    key = (namespace, name)
    meta = body.get("metadata", {})
    if event.get("type") == "DELETED":
        state.forget(key)
    elif not meta.get("deletionTimestamp"):
        uid, generation = spec_version(meta)
        if spec_pending(state.handled.get(key), uid, generation):
            await reconcile_or_retry(state, projection(dict(body)), idx, f"generation {generation}")
        state.refresh(key)
    state.publish_soon()
