"""Kopf handlers: read the indexes, ask the pure planners, write. No decisions live here.

Level-based: indexes hold every LocalLLM and every labelled child (Deployment,
Pod, PVC, Service) as the watches report them, so deriving a status costs no
API call. A LocalLLM event with a generation this process has not reconciled
(a new spec, or the first event after the operator's start) applies the
children that drifted from the spec; any child event checks that child for
drift (a hand edit, a deletion) and recomputes the owner's status. A failed
reconcile is retried on a timer until it succeeds (`retry_after`).

Only Kopf's event handlers and indexes are used, none of its change-detecting
handlers (on.create/update/resume): those need a copy of each object's last
handled spec, written to the object as an annotation (one more write per
change) and deep-copied from every event's body, children included.

One concurrency model: everything runs on Kopf's event loop, API calls
included (`kube`: asynchronous, each with a timeout; no worker threads). Per-operator state
lives in one `State` object in Kopf's operator memo (shallow-copied into every
object's memo, so all handlers share it), never in module globals. Status and
endpoint writes are coalesced per key on the loop (`Debouncer`).

Ownership: only objects with an owner reference to the LocalLLM's UID are
written or deleted, and every write carries the UID it saw as a precondition
(every create, that no object of its name exists: `kube.create`).
A child name held by anything else is a `NameConflict` in the status; the
handler retries until the name is free. No finalizer: owner references let the
garbage collector remove children, and deletion never waits on the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from sdc_operator import GROUP, KIND, PLURAL, VERSION, kube, metrics, timings
from sdc_operator.builders.common import OWNER_LABEL, LocalLLM, cache_claim_name, selector
from sdc_operator.builders.service import endpoint_url
from sdc_operator.builders.workload import desired_children, engine_port
from sdc_operator.debounce import Debouncer
from sdc_operator.fit import fit_check
from sdc_operator.plan import (
    REPLICA_MANAGERS,
    Apply,
    Plan,
    drift,
    event_due,
    list_replacements,
    manually_deleted,
    namespace_terminating,
    owns,
    plan,
    reported,
    retry_after,
    retry_delay,
    spec_pending,
    stale_children,
    status_patch,
    yield_fields,
)
from sdc_operator.policy import policy_errors, reference_errors, references
from sdc_operator.publish import ENDPOINTS_KEY, audience, endpoints_configmap, endpoints_document
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import Condition, semantic_errors
from sdc_operator.status import Observed, derive_status

SETTINGS = OperatorSettings()
log = logging.getLogger("sdc_operator")
Key = tuple[str, str]
INDEX_NAMES = ("llm_index", "deployment_index", "pod_index", "claim_index", "service_index", "policy_index")
# A name taken between the read and the create is read and planned again; this many times in a row (a
# name taken and freed again and again) makes it a failed reconcile, retried on the timer.
CREATE_RACES = 3
CHILD_INDEXES = {
    "Deployment": "deployment_index",
    "PersistentVolumeClaim": "claim_index",
    "Service": "service_index",
    "NetworkPolicy": "policy_index",  # the engines' own, where the chart renders none (engine_network)
}


@dataclass
class State:
    """Everything the operator remembers between events; one per process, kept in Kopf's memo."""

    indexes: dict[str, Any] = field(default_factory=dict)
    last_status: dict[Key, dict[str, Any]] = field(default_factory=dict)  # what we last wrote
    apply_errors: dict[Key, str] = field(default_factory=dict)
    reference_errors: dict[Key, list[str]] = field(default_factory=dict)  # Secrets/claims not opened to it
    conflicts: dict[Key, list[str]] = field(default_factory=dict)
    last_event_phase: dict[Key, str] = field(default_factory=dict)
    phase: dict[Key, str] = field(default_factory=dict)  # the phase counted in the models gauge
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    written: dict[Key, tuple[dict[str, Any], str]] = field(default_factory=dict)  # status, resourceVersion seen
    retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)  # failed reconciles being retried
    handled: dict[Key, tuple[str, int]] = field(default_factory=dict)  # uid, generation last reconciled
    # The parsed spec and desired children of each LocalLLM's current generation: every child event's drift
    # check and every status computation needs them, and they change only with the spec.
    specs: dict[Key, SpecView] = field(default_factory=dict)
    published: str | None = None
    published_known: bool = False
    status_debouncer: Debouncer = field(init=False)
    publish_debouncer: Debouncer = field(init=False)
    # Service creations wait on the API server's ClusterIP allocation, which runs about one at a time: a
    # few at once keep its pace, while hundreds would hold every API thread and starve the Deployments.
    service_creations: asyncio.Semaphore = field(init=False)
    status_writes: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.service_creations = asyncio.Semaphore(SETTINGS.service_creation_concurrency)
        self.status_writes = asyncio.Semaphore(SETTINGS.status_write_concurrency)
        self.status_debouncer = Debouncer(
            SETTINGS.status_debounce_s, lambda key: _flush_status(self, key), SETTINGS.status_min_interval_s
        )
        self.publish_debouncer = Debouncer(SETTINGS.status_debounce_s, lambda _: _flush_publish(self))

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        """A deleted LocalLLM leaves no state behind in this process."""
        phase = self.phase.pop(key, None)
        if phase is not None:
            metrics.MODELS.labels(phase).dec()
        for table in (
            self.last_status,
            self.apply_errors,
            self.reference_errors,
            self.conflicts,
            self.last_event_phase,
            self.locks,
            self.written,
            self.handled,
            self.specs,
        ):
            table.pop(key, None)
        if (task := self.retries.pop(key, None)) is not None:
            task.cancel()


@dataclass(frozen=True)
class SpecView:
    """One generation of a LocalLLM as the operator reads it: parsed, checked, and its children built."""

    version: tuple[str, int]  # uid, generation: the spec changes only with them
    llm: LocalLLM | None
    errors: list[str]
    desired: list[dict[str, Any]]  # read-only: shared by every caller until the next generation


class NameConflictError(Exception):
    pass


class ReferenceRefusedError(Exception):
    """A Secret or claim the LocalLLM names is not open to LocalLLMs (policy.ALLOW_LABEL); rechecked on a timer,
    since labelling the object sends the operator no event."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NoDiffBase(kopf.DiffBaseStorage):
    """No change-detecting handlers, so no diff base: Kopf would otherwise deep-copy every event's body
    (a Pod's included) to build one, and write it to each LocalLLM as an annotation."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def spec_version(meta: dict[str, Any]) -> tuple[str, int]:
    """(uid, generation): a LocalLLM's spec changes only with one of them."""
    return str(meta.get("uid") or ""), int(meta.get("generation") or 0)


def _state(memo: kopf.Memo) -> State:
    state: State = memo["sdc_state"]
    return state


# The children's watches: (group, version, plural) as in the decorators below.
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("v1", "pods"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "services"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    settings.watching.connect_timeout = SETTINGS.api_timeout_s
    settings.networking.request_timeout = SETTINGS.api_timeout_s * 3
    # Retries of a failing API (a stopped API server): short and flat, so the watches are back within
    # seconds of /readyz instead of after a growing backoff; ten minutes of them before Kopf gives up.
    settings.networking.error_backoffs = (0.5, 1, 2, 3, *([5] * 120))
    settings.peering.standalone = SETTINGS.standalone
    settings.peering.name = SETTINGS.peering_name
    settings.peering.mandatory = not SETTINGS.standalone
    settings.peering.lifetime = SETTINGS.peering_lifetime_s
    kube.TIMEOUT_S = SETTINGS.api_timeout_s
    memo["sdc_state"] = State()
    if not SETTINGS.standalone:
        await kube.ensure_peering(SETTINGS.peering_name, SETTINGS.watch_namespaces)
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(SETTINGS.metrics_port)


@kopf.on.cleanup()
async def close_api(**_: Any) -> None:
    await kube.close()  # the API session's connections, before the loop goes


# -- indexes -------------------------------------------------------------------------------------


def _replica_managers(meta: dict[str, Any]) -> list[str]:
    """Managers that own a Deployment's spec.replicas (an HPA writes it through the scale subresource)."""
    out = []
    for entry in meta.get("managedFields") or []:
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            out.append(str(entry.get("manager")))
    return out


def _projection(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    out = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta.get(k)
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "annotations",
                "deletionTimestamp",
                "labels",
                "ownerReferences",
            )
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    if body.get("kind") in ("Deployment", KIND):  # a LocalLLM's: who scaled it (to zero), for its status
        out[REPLICA_MANAGERS] = _replica_managers(meta)
    if body.get("kind") == "Pod":
        out["spec"] = {}  # the status reads a pod's conditions only: its spec is most of its memory
    return out


@kopf.index(GROUP, VERSION, PLURAL)
async def llm_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): _projection(dict(body))}


def _child_key(namespace: str, labels: kopf.Labels) -> Key:
    return namespace, str(labels[OWNER_LABEL])


@kopf.index("apps", "v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
async def deployment_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(dict(body))}


@kopf.index("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
async def pod_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    timings.observe(dict(body))  # model download and load time, once per pod
    return {_child_key(namespace, labels): _projection(dict(body))}


@kopf.index("v1", "persistentvolumeclaims", labels={OWNER_LABEL: kopf.PRESENT})
async def claim_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(dict(body))}


@kopf.index("v1", "services", labels={OWNER_LABEL: kopf.PRESENT})
async def service_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(dict(body))}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels={OWNER_LABEL: kopf.PRESENT})
async def policy_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {_child_key(namespace, labels): _projection(dict(body))}


def _one(index: kopf.Index[Any, Any], key: Key) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


def _all(index: kopf.Index[Any, Any], key: Key) -> list[dict[str, Any]]:
    store = index.get(key)
    return list(store) if store else []


def _indexes(state: State, kwargs: dict[str, Any]) -> dict[str, Any]:
    idx = {n: kwargs[n] for n in INDEX_NAMES}
    state.indexes.update(idx)  # the same live objects every time; kept for the debounced flushes
    return idx


# -- reconcile children ----------------------------------------------------------------------


def _parse(body: dict[str, Any]) -> tuple[LocalLLM | None, list[str]]:
    try:
        llm = LocalLLM.from_body(body)
    except ValidationError as err:
        return None, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
    return llm, semantic_errors(llm.spec) + policy_errors(llm.spec, SETTINGS)


def spec_view(state: State, body: dict[str, Any]) -> SpecView:
    """The body's spec parsed and built once per generation (cached per LocalLLM)."""
    meta = body["metadata"]
    key = (str(meta["namespace"]), str(meta["name"]))
    version = spec_version(meta)
    view = state.specs.get(key)
    if view is None or view.version != version:
        llm, errors = _parse(body)
        desired = desired_children(llm, SETTINGS) if llm is not None and not errors else []
        view = state.specs[key] = SpecView(version, llm, errors, desired)
    return view


def _observed_children(key: Key, idx: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for kind, name in CHILD_INDEXES.items():
        for child in _all(idx[name], key):
            if child.get("kind") == kind:
                out[(kind, child["metadata"]["name"])] = child
    return out


async def reconcile(state: State, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    """Make the children match this body's spec; raises kube.ApiError or NameConflictError."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    async with state.lock(key):
        await _reconcile(state, key, body, idx, reason)
    state.handled[key] = spec_version(meta)


async def _reconcile(state: State, key: Key, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    namespace, name = key
    uid = str(body["metadata"].get("uid") or "")
    started = time.monotonic()
    view = spec_view(state, body)
    llm, errors = view.llm, view.errors
    if llm is not None and not errors:
        errors = await _reference_errors(state, key, llm)
    observed = _observed_children(key, idx)
    if errors or llm is None:
        # Nothing half-made: the serving objects it owns go; a bound cache (downloaded weights) stays.
        for (kind, child_name), child in observed.items():
            if kind in ("Deployment", "Service") and owns(child, uid, name):
                await kube.delete(kind, namespace, child_name, uid=child["metadata"]["uid"])
        state.conflicts.pop(key, None)
        metrics.RECONCILES.labels("invalid").inc()
        _refresh(state, key)
        if state.reference_errors.get(key):
            raise ReferenceRefusedError("; ".join(state.reference_errors[key]))
        return
    desired = view.desired
    # A name missing from the (label-filtered) indexes may still be taken by an unlabelled object: read
    # those names, all at once (one round trip of latency before the first write, not one per child), so
    # that nothing is built beside a foreign object. The creates then carry a "no such object" precondition
    # (`kube.create`), so one that appeared since is refused, read and planned again, never taken over.
    missing = [
        (o["kind"], o["metadata"]["name"]) for o in desired if (o["kind"], o["metadata"]["name"]) not in observed
    ]
    found = await asyncio.gather(*(kube.read(kind, namespace, n) for kind, n in missing))
    observed.update({k: _projection(obj) for k, obj in zip(missing, found, strict=True) if obj is not None})
    for _ in range(CREATE_RACES):
        actions = plan(desired, observed, uid=uid, name=name, yield_to=SETTINGS.yield_fields_to)
        state.conflicts[key] = actions.conflicts
        try:
            taken = await _apply_all(state, actions, key, reason)
        except kube.ApiError as err:
            metrics.ERRORS.labels("apply").inc()
            if reported(err.status):
                state.apply_errors[key] = f"the API server refused a child object: {err}"
            _refresh(state, key)
            raise
        if taken is None:
            break
        kind, child_name = taken
        current = await kube.read(kind, namespace, child_name)
        log.info("%s/%s: %s/%s appeared before its create; planning again", namespace, name, kind, child_name)
        if current is not None:  # gone again: the next pass creates it
            observed[taken] = _projection(current)
    else:
        raise kube.ApiError(409, f"the name of {kind}/{child_name} keeps being taken and freed")
    for kind, child_name, child_uid in stale_children(desired, observed, uid, name):  # a policy no longer wanted
        await kube.delete(kind, namespace, child_name, uid=child_uid)
        log.info("deleted %s/%s of %s/%s: no longer wanted", kind, child_name, namespace, name)
    state.apply_errors.pop(key, None)
    _refresh(state, key)
    if actions.conflicts:
        metrics.RECONCILES.labels("conflict").inc()
        raise NameConflictError(", ".join(actions.conflicts))
    metrics.RECONCILES.labels("ok").inc()
    metrics.DURATION.observe(time.monotonic() - started)


async def _reference_errors(state: State, key: Key, llm: LocalLLM) -> list[str]:
    """Read the labels of every Secret and claim the spec names (metadata only) and judge them (policy)."""
    namespace = key[0]
    refs = references(llm.spec)
    wanted = sorted({(kind, name) for kind, name, _ in refs})
    found = await asyncio.gather(*(kube.read_labels(kind, namespace, name) for kind, name in wanted))
    errors = reference_errors(namespace, refs, dict(zip(wanted, found, strict=True)), SETTINGS)
    if errors:
        state.reference_errors[key] = errors
    else:
        state.reference_errors.pop(key, None)
    return errors


async def _apply_all(state: State, actions: Plan, key: Key, reason: str) -> tuple[str, str] | None:
    """Apply the plan in order; stop at a create whose name turned out to be taken, and return that name."""
    for action in actions.applies:
        if action.uid is None:
            slot = state.service_creations if action.key[0] == "Service" else contextlib.nullcontext()
            async with slot:
                created = await kube.create(action.obj)
            if created is None:
                return action.key
            metrics.APPLIES.labels(action.key[0]).inc()
        else:
            await _apply(action)
        log.info("applied %s/%s for %s/%s (%s; %s)", *action.key, *key, reason, action.reason)
    return None


async def _apply(action: Apply) -> None:
    """Apply one child of a known UID; where the apply cannot undo a hand edit of a list, replace that list."""
    want = {k: action.obj[k] for k in ("metadata", "spec")}
    try:
        result = await kube.apply(action.obj, uid=action.uid)
        left = drift(want, _projection(result))
    except kube.ApiError as err:
        if err.status != 422:
            raise
        left = [p for p in action.reason.removeprefix("changed: ").split(", ") if p.startswith(".")]
    metrics.APPLIES.labels(action.key[0]).inc()
    if left and action.uid and (ops := list_replacements(want, left, action.uid)):
        await kube.json_patch(action.key[0], action.obj["metadata"]["namespace"], action.key[1], ops)
        await kube.apply(action.obj, uid=action.uid)


async def reconcile_or_retry(state: State, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    """Reconcile now; if that fails, keep retrying on a timer: no further event may come to retry on."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    try:
        await reconcile(state, body, idx, reason)
    except NameConflictError as err:  # wait for the name: the foreign object is never touched
        log.warning("%s/%s: child names taken by objects it does not own: %s; retrying", *key, err)
        _retry(state, key, reason, None)
    except ReferenceRefusedError as err:  # Failed until the owner labels the object: checked again on a timer
        log.warning("%s/%s: %s; checking again later", *key, err)
        _retry(state, key, reason, None)
    except kube.ApiError as err:
        if _namespace_going(err):
            return
        log.warning("%s/%s: reconcile (%s) failed, retrying: %s", *key, reason, err)
        _retry(state, key, reason, err.status)


def _drifted(state: State, llm_body: dict[str, Any], child: dict[str, Any]) -> bool:
    """Whether a child event shows a field the operator sets differing from the spec (a hand edit)."""
    for obj in spec_view(state, llm_body).desired:
        if obj["kind"] == child.get("kind") and obj["metadata"]["name"] == child["metadata"]["name"]:
            want = yield_fields(obj, child, SETTINGS.yield_fields_to)
            return bool(drift({k: want[k] for k in ("metadata", "spec")}, child))
    return False


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
    idx = _indexes(state, kwargs)
    llm = _one(idx["llm_index"], (namespace, owner))
    if llm is None or llm["metadata"].get("deletionTimestamp"):
        return
    child = _projection(dict(body))
    if child.get("kind") == "Pod":
        _publish_soon(state)  # a pod ready, gone or re-addressed changes the published replicas
    uid = str(llm["metadata"]["uid"])
    repair = ""
    if event.get("type") == "DELETED":
        if manually_deleted(child, uid, owner):
            repair = f"{child['kind']} {child['metadata']['name']} was deleted"
    elif child.get("kind") in CHILD_INDEXES and owns(child, uid, owner) and _drifted(state, llm, child):
        repair = f"{child['kind']} {child['metadata']['name']} was changed by hand"
    if repair:
        logger.warning(f"{repair}; repairing it")
        await reconcile_or_retry(state, llm, idx, repair)
        return
    _refresh(state, (namespace, owner))


def _namespace_going(err: Exception) -> bool:
    """A deleted namespace takes the children before the LocalLLM: nothing to repair there."""
    return isinstance(err, kube.ApiError) and namespace_terminating(err.status, str(err))


def _retry(state: State, key: Key, reason: str, status: int | None) -> None:
    """One retry loop per LocalLLM at most; it reconciles whatever the index shows when it runs."""
    if key not in state.retries:
        state.retries[key] = asyncio.get_running_loop().create_task(_retry_until_done(state, key, reason, status))


async def _retry_until_done(state: State, key: Key, reason: str, status: int | None) -> None:
    """Reconcile the LocalLLM as the index shows it now until that succeeds (level-based: a retry that
    another event already made unneeded costs one no-op plan), or until the LocalLLM is gone."""
    try:
        attempt = 1
        while True:
            await asyncio.sleep(retry_after(attempt, status))
            llm = _one(state.indexes["llm_index"], key)
            if llm is None or llm["metadata"].get("deletionTimestamp"):
                return
            try:
                await reconcile(state, llm, state.indexes, f"retry {attempt} of: {reason}")
                log.info("%s/%s: reconciled on retry %d (%s)", *key, attempt, reason)
                return
            except (NameConflictError, ReferenceRefusedError, kube.ApiError) as err:
                if _namespace_going(err):
                    return
                status = err.status if isinstance(err, kube.ApiError) else None
                log.warning("%s/%s: retry %d of %s failed: %s", *key, attempt, reason, err)
                attempt += 1
    finally:
        if state.retries.get(key) is asyncio.current_task():
            del state.retries[key]


# -- status ------------------------------------------------------------------------------------


def _refresh(state: State, key: Key) -> None:
    """Schedule a status recomputation; bursts of child events collapse into one write."""
    state.status_debouncer.trigger(key)


def compute_status(state: State, key: Key, body: dict[str, Any]) -> dict[str, Any]:
    """The whole status of one LocalLLM from the indexes: pure apart from reading them."""
    idx = state.indexes
    view = spec_view(state, body)
    llm, errors = view.llm, view.errors
    if key in state.apply_errors:
        errors = [*errors, state.apply_errors[key]]
    errors = [*errors, *state.reference_errors.get(key, [])]
    generation = int(body["metadata"].get("generation") or 1)
    previous = []
    for c in (body.get("status") or {}).get("conditions") or []:
        try:
            previous.append(Condition.model_validate(c))
        except ValidationError:
            continue
    spec = llm.spec if llm else None
    port = engine_port(llm.spec.runtime) if llm and not errors else 0
    endpoint = endpoint_url(llm, port, SETTINGS.cluster_domain) if llm and port else ""
    uid = str(body["metadata"].get("uid") or "")
    name = key[1]
    observed = Observed(
        deployment=next(
            (d for d in _all(idx["deployment_index"], key) if d["metadata"]["name"] == name and owns(d, uid, name)),
            None,
        ),
        pods=[p for p in _all(idx["pod_index"], key) if not p["metadata"].get("deletionTimestamp")],
        claim=next(
            (
                c
                for c in _all(idx["claim_index"], key)
                if llm and c["metadata"]["name"] == cache_claim_name(llm) and owns(c, uid, name)
            ),
            None,
        ),
        claim_expected=not (spec and (spec.cache.existing_claim or spec.model.source)),
    )
    return derive_status(
        generation=generation,
        desired_replicas=spec.replicas if spec else 0,
        endpoint=endpoint,
        served_name=spec.served_name if spec else "",
        observed=observed,
        spec_errors=errors,
        previous=previous,
        now=_now(),
        conflicts=state.conflicts.get(key) or [],
        fit=fit_check(spec, SETTINGS) if spec else None,
        selector=",".join(f"{k}={v}" for k, v in sorted(selector(llm).items())) if llm else None,
        replica_managers=body.get(REPLICA_MANAGERS) or (),
        scale_to_zero=bool(spec and spec.autoscaling and spec.autoscaling.min_replicas == 0),
    ).model_dump(by_alias=True, exclude_none=True)


async def _flush_status(state: State, key: Hashable) -> None:
    # A write slot first, then the status as it is at that moment: when the API server is slow, the slots
    # stay busy and a LocalLLM's intermediate states collapse into its latest one (the debouncer runs a
    # key once more with the newest state) instead of queueing one write each.
    async with state.status_writes:
        await _write_status(state, key)


async def _write_status(state: State, key: Hashable) -> None:
    assert isinstance(key, tuple)  # noqa: S101 - the debouncer's keys are (namespace, name)
    namespace, name = str(key[0]), str(key[1])
    body = _one(state.indexes["llm_index"], (namespace, name))
    if not body or body["metadata"].get("deletionTimestamp"):
        return
    version = str(body["metadata"].get("resourceVersion") or "")
    written = state.written.get((namespace, name))
    if written is not None and written[1] == version:
        # The watch has not shown our last write yet (under load it lags by seconds while child events
        # keep flushing): build on what we wrote, not on the older status the index holds, so the same
        # status is not written again. A write by anyone else changes the resourceVersion, and is put back.
        body = {**body, "status": written[0]}
    status = compute_status(state, (namespace, name), body)
    _track_phase(state, (namespace, name), status["phase"])
    current = dict(body.get("status") or {})
    patch = status_patch(current, status)
    if patch is None:
        state.last_status[(namespace, name)] = status
        return
    try:
        await kube.patch_status(namespace, name, patch)
    except kube.ApiError as err:
        if err.status == 404:  # deleted since the event: nothing to report on
            state.last_status.pop((namespace, name), None)
            return
        metrics.ERRORS.labels("status").inc()
        state.last_status.pop((namespace, name), None)
        asyncio.get_running_loop().call_later(retry_delay(err.status), state.status_debouncer.trigger, key)
        raise
    state.last_status[(namespace, name)] = status
    state.written[(namespace, name)] = (status, version)
    metrics.STATUS_WRITES.inc()
    if event_due(status["phase"], state.last_event_phase.get((namespace, name), current.get("phase"))):
        kind = "Warning" if status["phase"] in ("Failed", "Degraded") else "Normal"
        try:
            await kube.post_event(
                namespace,
                name,
                str(body["metadata"]["uid"]),
                kind,
                status["phase"],
                status["message"],
            )
        except kube.ApiError as err:  # an event is best effort: never fail the status for it
            metrics.ERRORS.labels("event").inc()
            log.warning("could not post an event for %s/%s: %s", namespace, name, err)
    state.last_event_phase[(namespace, name)] = status["phase"]
    _publish_soon(state)


def _track_phase(state: State, key: Key, phase: str) -> None:
    """Keep the models-by-phase gauge current in O(1) per status computation."""
    old = state.phase.get(key)
    if old == phase:
        return
    if old is not None:
        metrics.MODELS.labels(old).dec()
    metrics.MODELS.labels(phase).inc()
    state.phase[key] = phase


# -- endpoints ---------------------------------------------------------------------------------


def _publish_soon(state: State) -> None:
    """Schedule a write of the endpoints ConfigMap (coalesced; written only when its content changes)."""
    state.publish_debouncer.trigger("endpoints")


async def _flush_publish(state: State) -> None:
    index = state.indexes.get("llm_index")
    if index is None:
        return
    llms = []
    for k, store in index.items():
        for item in store:
            if item["metadata"].get("deletionTimestamp"):
                continue
            llms.append({**item, "status": state.last_status.get(k, item.get("status"))})
    document = endpoints_document(
        llms,
        audience(SETTINGS.endpoints_namespace, SETTINGS.publish_namespaces, SETTINGS.publish_pool),
        state.indexes.get("pod_index"),  # each LocalLLM's pods as the watch shows them: one entry per ready pod
    )
    if not state.published_known:
        data = await kube.read_configmap_data(SETTINGS.endpoints_namespace, SETTINGS.endpoints_configmap)
        state.published, state.published_known = (data or {}).get(ENDPOINTS_KEY), True
    if state.published == document:
        return
    try:
        await kube.apply(endpoints_configmap(SETTINGS.endpoints_configmap, SETTINGS.endpoints_namespace, document))
    except kube.ApiError as err:
        metrics.ERRORS.labels("publish").inc()
        asyncio.get_running_loop().call_later(retry_delay(err.status), _publish_soon, state)
        raise
    state.published = document


@kopf.on.event(GROUP, VERSION, PLURAL)
async def localllm_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A new spec reconciles the children; any event recomputes the status (a status edited by anyone
    else is put back to what the cluster shows) and the published endpoints (routing weights)."""
    state = _state(memo)
    idx = _indexes(state, kwargs)
    key = (namespace, name)
    meta = body.get("metadata", {})
    if event.get("type") == "DELETED":
        state.forget(key)
    elif not meta.get("deletionTimestamp"):
        uid, generation = spec_version(meta)
        if spec_pending(state.handled.get(key), uid, generation):
            await reconcile_or_retry(state, _projection(dict(body)), idx, f"generation {generation}")
        _refresh(state, key)
    _publish_soon(state)
