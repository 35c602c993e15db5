"""The status writer: a LocalLLM's status computed from the indexes (`status.derive_status`) and written.

Writes are coalesced per LocalLLM (`State.refresh` triggers a debounced
`flush`) and bounded (`State.status_writes`); a status edited by anyone else is
put back to what the cluster shows. A phase that is an outcome (`event_due`)
is also posted as a core/v1 Event, best effort.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Hashable
from typing import Any

from pydantic import ValidationError

from sdc_operator import kube, metrics
from sdc_operator.backoff import retry_delay
from sdc_operator.builders.common import LocalLLM, cache_claim_name, selector
from sdc_operator.builders.service import endpoint_url
from sdc_operator.builders.workload import engine_port
from sdc_operator.fit import fit_check
from sdc_operator.indexes import every, one, own_deployment
from sdc_operator.plan import REPLICA_MANAGERS, owns
from sdc_operator.spec import Condition
from sdc_operator.state import Key, State, spec_view
from sdc_operator.status import Observed, derive_status, status_patch
from sdc_operator.triggers import event_due, serving_began

log = logging.getLogger("sdc_operator")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _previous_conditions(body: dict[str, Any]) -> list[Condition]:
    previous = []
    for c in (body.get("status") or {}).get("conditions") or []:
        try:
            previous.append(Condition.model_validate(c))
        except ValidationError:
            continue
    return previous


def _observed(state: State, key: Key, body: dict[str, Any], llm: LocalLLM | None) -> Observed:
    """The LocalLLM's own Deployment, pods and cache claim as the indexes show them."""
    idx, name = state.indexes, key[1]
    uid = str(body["metadata"].get("uid") or "")
    spec = llm.spec if llm else None
    return Observed(
        deployment=own_deployment(idx, key, uid),
        pods=[p for p in every(idx["pod_index"], key) if not p["metadata"].get("deletionTimestamp")],
        claim=next(
            (
                c
                for c in every(idx["claim_index"], key)
                if llm and c["metadata"]["name"] == cache_claim_name(llm) and owns(c, uid, name)
            ),
            None,
        ),
        claim_expected=not (spec and (spec.cache.existing_claim or spec.model.source)),
        download=state.downloads.get(key),
    )


def compute_status(state: State, key: Key, body: dict[str, Any]) -> dict[str, Any]:
    """The whole status of one LocalLLM from the indexes: pure apart from reading them."""
    settings = state.settings
    view = spec_view(state, body)
    llm, errors = view.llm, view.errors
    if key in state.apply_errors:
        errors = [*errors, state.apply_errors[key]]
    errors = [*errors, *state.reference_errors.get(key, [])]
    spec = llm.spec if llm else None
    port = engine_port(llm.spec.runtime) if llm and not errors else 0
    return derive_status(
        generation=int(body["metadata"].get("generation") or 1),
        desired_replicas=spec.replicas if spec else 0,
        endpoint=endpoint_url(llm, port, settings.cluster_domain) if llm and port else "",
        served_name=spec.served_name if spec else "",
        observed=_observed(state, key, body, llm),
        spec_errors=errors,
        previous=_previous_conditions(body),
        now=_now(),
        conflicts=state.conflicts.get(key) or [],
        fit=fit_check(spec, settings) if spec else None,
        selector=",".join(f"{k}={v}" for k, v in sorted(selector(llm).items())) if llm else None,
        replica_managers=body.get(REPLICA_MANAGERS) or (),
        scale_to_zero=bool(spec and spec.autoscaling and spec.autoscaling.min_replicas == 0),
    ).model_dump(by_alias=True, exclude_none=True)


async def flush(state: State, key: Hashable) -> None:
    """The debounced write (`State.flush_status`).

    A write slot first, then the status as it is at that moment: when the API server is slow, the slots
    stay busy and a LocalLLM's intermediate states collapse into its latest one (the debouncer runs a
    key once more with the newest state) instead of queueing one write each."""
    async with state.status_writes:
        await write_status(state, key)


async def write_status(state: State, key: Hashable) -> None:
    assert isinstance(key, tuple)  # noqa: S101 - the debouncer's keys are (namespace, name)
    namespace, name = str(key[0]), str(key[1])
    body = one(state.indexes["llm_index"], (namespace, name))
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
        state.last_status.pop((namespace, name), None)
        if err.status == 404:  # deleted since the event: nothing to report on
            return
        metrics.ERRORS.labels("status").inc()
        asyncio.get_running_loop().call_later(retry_delay(err.status), state.status_debouncer.trigger, key)
        raise
    state.last_status[(namespace, name)] = status
    state.written[(namespace, name)] = (status, version)
    metrics.STATUS_WRITES.inc()
    await _announce(state, (namespace, name), body, status, current.get("phase"))
    if serving_began(current, status):
        state.publish_now()  # its first ready replica: requests held for it (scale from zero) wait on this
    else:
        state.publish_soon()


async def _announce(state: State, key: Key, body: dict[str, Any], status: dict[str, Any], shown: str | None) -> None:
    """Post a core/v1 Event for an outcome phase (`event_due`); an event is best effort, never failing the status."""
    phase = status["phase"]
    if event_due(phase, state.last_event_phase.get(key, shown)):
        kind = "Warning" if phase in ("Failed", "Degraded") else "Normal"
        try:
            await kube.post_event(*key, str(body["metadata"]["uid"]), kind, phase, status["message"])
        except kube.ApiError as err:
            metrics.ERRORS.labels("event").inc()
            log.warning("could not post an event for %s/%s: %s", *key, err)
    state.last_event_phase[key] = phase


def _track_phase(state: State, key: Key, phase: str) -> None:
    """Keep the models-by-phase gauge current in O(1) per status computation."""
    old = state.phase.get(key)
    if old == phase:
        return
    if old is not None:
        metrics.MODELS.labels(old).dec()
    metrics.MODELS.labels(phase).inc()
    state.phase[key] = phase
