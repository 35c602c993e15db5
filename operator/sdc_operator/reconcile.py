"""The reconciler: read a LocalLLM's children, compare them with its spec (`plan`), apply what differs.

Ownership: only objects with an owner reference to the LocalLLM's UID are
written or deleted, and every write carries the UID it saw as a precondition
(every create, that no object of its name exists: `kube.create`). A child
name held by anything else is a `NameConflict` in the status; the caller
retries until the name is free (`retry`). No finalizer: owner references let
the garbage collector remove children, and deletion never waits on the
operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sdc_operator import kube, metrics
from sdc_operator.backoff import reported
from sdc_operator.builders.common import LocalLLM
from sdc_operator.indexes import observed_children, projection
from sdc_operator.plan import Apply, Plan, drift, list_replacements, owns, plan, stale_children, yield_fields
from sdc_operator.policy import reference_errors, references
from sdc_operator.state import Key, State, spec_version, spec_view

log = logging.getLogger("sdc_operator")
# A name taken between the read and the create is read and planned again; this many times in a row (a
# name taken and freed again and again) makes it a failed reconcile, retried on the timer.
CREATE_RACES = 3
Observed = dict[tuple[str, str], dict[str, Any]]


class NameConflictError(Exception):
    pass


class ReferenceRefusedError(Exception):
    """A Secret or claim the LocalLLM names is not open to LocalLLMs (policy.ALLOW_LABEL); rechecked on a timer,
    since labelling the object sends the operator no event."""


async def reconcile(state: State, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    """Make the children match this body's spec; raises kube.ApiError, NameConflictError or ReferenceRefusedError."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    async with state.lock(key):
        await _reconcile(state, key, body, idx, reason)
    state.handled[key] = spec_version(meta)


async def _reconcile(state: State, key: Key, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    started = time.monotonic()
    view = spec_view(state, body)
    llm, errors = view.llm, view.errors
    if llm is not None and not errors:
        errors = await _reference_errors(state, key, llm)
    observed = observed_children(key, idx)
    if errors or llm is None:
        await _take_down(state, key, str(body["metadata"].get("uid") or ""), observed)
        return
    await _read_unindexed(key[0], view.desired, observed)
    actions = await _apply_planned(state, key, body, view.desired, observed, reason)
    await _prune(state, key, view.desired, observed, str(body["metadata"].get("uid") or ""))
    state.apply_errors.pop(key, None)
    state.refresh(key)
    if actions.conflicts:
        metrics.RECONCILES.labels("conflict").inc()
        raise NameConflictError(", ".join(actions.conflicts))
    metrics.RECONCILES.labels("ok").inc()
    metrics.DURATION.observe(time.monotonic() - started)


async def _take_down(state: State, key: Key, uid: str, observed: Observed) -> None:
    """An invalid or refused spec: nothing half-made. The serving objects it owns go; a bound cache
    (downloaded weights) stays."""
    namespace, name = key
    for (kind, child_name), child in observed.items():
        if kind in ("Deployment", "Service") and owns(child, uid, name):
            await kube.delete(kind, namespace, child_name, uid=child["metadata"]["uid"])
    state.conflicts.pop(key, None)
    metrics.RECONCILES.labels("invalid").inc()
    state.refresh(key)
    if state.reference_errors.get(key):
        raise ReferenceRefusedError("; ".join(state.reference_errors[key]))


async def _prune(state: State, key: Key, desired: list[dict[str, Any]], observed: Observed, uid: str) -> None:
    """Children of a pruned kind this LocalLLM owns and no longer wants (its NetworkPolicy once the chart
    covers the namespace or policies are off) are deleted, by UID; the UID is remembered so that the
    deletion's own event is not taken for a hand deletion to repair."""
    namespace, name = key
    for kind, child_name, child_uid in stale_children(desired, observed, uid, name):
        state.pruned.setdefault(key, set()).add(child_uid)
        try:
            await kube.delete(kind, namespace, child_name, uid=child_uid)
        except kube.ApiError:
            state.pruned.get(key, set()).discard(child_uid)
            raise
        log.info("deleted %s/%s of %s/%s: no longer wanted", kind, child_name, namespace, name)


async def _read_unindexed(namespace: str, desired: list[dict[str, Any]], observed: Observed) -> None:
    """A name missing from the (label-filtered) indexes may still be taken by an unlabelled object: read
    those names, all at once (one round trip of latency before the first write, not one per child), so
    that nothing is built beside a foreign object. The creates then carry a "no such object" precondition
    (`kube.create`), so one that appeared since is refused, read and planned again, never taken over."""
    missing = [
        (o["kind"], o["metadata"]["name"]) for o in desired if (o["kind"], o["metadata"]["name"]) not in observed
    ]
    found = await asyncio.gather(*(kube.read(kind, namespace, n) for kind, n in missing))
    observed.update({k: projection(obj) for k, obj in zip(missing, found, strict=True) if obj is not None})


async def _apply_planned(
    state: State, key: Key, body: dict[str, Any], desired: list[dict[str, Any]], observed: Observed, reason: str
) -> Plan:
    """Plan and apply; a create whose name turned out to be taken is read, and the plan made again."""
    namespace, name = key
    uid = str(body["metadata"].get("uid") or "")
    for _ in range(CREATE_RACES):
        actions = plan(desired, observed, uid=uid, name=name, yield_to=state.settings.yield_fields_to)
        state.conflicts[key] = actions.conflicts
        try:
            taken = await _apply_all(state, actions, key, reason)
        except kube.ApiError as err:
            metrics.ERRORS.labels("apply").inc()
            if reported(err.status):
                state.apply_errors[key] = f"the API server refused a child object: {err}"
            state.refresh(key)
            raise
        if taken is None:
            return actions
        kind, child_name = taken
        current = await kube.read(kind, namespace, child_name)
        log.info("%s/%s: %s/%s appeared before its create; planning again", namespace, name, kind, child_name)
        if current is not None:  # gone again: the next pass creates it
            observed[taken] = projection(current)
    raise kube.ApiError(409, f"the name of {kind}/{child_name} keeps being taken and freed")


async def _reference_errors(state: State, key: Key, llm: LocalLLM) -> list[str]:
    """Read the labels of every Secret and claim the spec names (metadata only) and judge them (policy)."""
    namespace = key[0]
    refs = references(llm.spec)
    wanted = sorted({(kind, name) for kind, name, _ in refs})
    found = await asyncio.gather(*(kube.read_labels(kind, namespace, name) for kind, name in wanted))
    errors = reference_errors(namespace, refs, dict(zip(wanted, found, strict=True)), state.settings)
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
            await apply_one(action)
        log.info("applied %s/%s for %s/%s (%s; %s)", *action.key, *key, reason, action.reason)
    return None


async def apply_one(action: Apply) -> None:
    """Apply one child of a known UID; where the apply cannot undo a hand edit of a list, replace that list.

    A refused apply (422: a hand-edited port would be merged in as a duplicate) changed nothing, so every
    path the plan found drifted is still drifted (`Apply.paths`, all of them)."""
    want = {k: action.obj[k] for k in ("metadata", "spec")}
    try:
        result = await kube.apply(action.obj, uid=action.uid)
        left = drift(want, projection(result))
    except kube.ApiError as err:
        if err.status != 422:
            raise
        left = list(action.paths)
    metrics.APPLIES.labels(action.key[0]).inc()
    if left and action.uid and (ops := list_replacements(want, left, action.uid)):
        await kube.json_patch(action.key[0], action.obj["metadata"]["namespace"], action.key[1], ops)
        await kube.apply(action.obj, uid=action.uid)


def drifted(state: State, llm_body: dict[str, Any], child: dict[str, Any]) -> bool:
    """Whether a child event shows a field the operator sets differing from the spec (a hand edit)."""
    for obj in spec_view(state, llm_body).desired:
        if obj["kind"] == child.get("kind") and obj["metadata"]["name"] == child["metadata"]["name"]:
            want = yield_fields(obj, child, state.settings.yield_fields_to)
            return bool(drift({k: want[k] for k in ("metadata", "spec")}, child))
    return False
