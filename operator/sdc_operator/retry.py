"""A failed reconcile is retried on a timer until it succeeds: no further event may come to retry on.

One retry loop per LocalLLM at most; each pass reconciles whatever the index
shows when it runs (level-based: a retry another event already made unneeded
costs one no-op plan). The pace is `backoff.retry_after`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sdc_operator import kube
from sdc_operator.backoff import namespace_terminating, retry_after
from sdc_operator.indexes import one
from sdc_operator.reconcile import NameConflictError, ReferenceRefusedError, reconcile
from sdc_operator.state import Key, State

log = logging.getLogger("sdc_operator")


async def reconcile_or_retry(state: State, body: dict[str, Any], idx: dict[str, Any], reason: str) -> None:
    """Reconcile now; if that fails, keep retrying on a timer."""
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
        if namespace_going(err):
            return
        log.warning("%s/%s: reconcile (%s) failed, retrying: %s", *key, reason, err)
        _retry(state, key, reason, err.status)


def namespace_going(err: Exception) -> bool:
    """A deleted namespace takes the children before the LocalLLM: nothing to repair there."""
    return isinstance(err, kube.ApiError) and namespace_terminating(err.status, str(err))


def _retry(state: State, key: Key, reason: str, status: int | None) -> None:
    if key not in state.retries:
        state.retries[key] = asyncio.get_running_loop().create_task(_retry_until_done(state, key, reason, status))


async def _retry_until_done(state: State, key: Key, reason: str, status: int | None) -> None:
    """Reconcile the LocalLLM as the index shows it now until that succeeds, or until the LocalLLM is gone."""
    try:
        attempt = 1
        while True:
            await asyncio.sleep(retry_after(attempt, status))
            llm = one(state.indexes["llm_index"], key)
            if llm is None or llm["metadata"].get("deletionTimestamp"):
                return
            try:
                await reconcile(state, llm, state.indexes, f"retry {attempt} of: {reason}")
                log.info("%s/%s: reconciled on retry %d (%s)", *key, attempt, reason)
                return
            except (NameConflictError, ReferenceRefusedError, kube.ApiError) as err:
                if namespace_going(err):
                    return
                status = err.status if isinstance(err, kube.ApiError) else None
                log.warning("%s/%s: retry %d of %s failed: %s", *key, attempt, reason, err)
                attempt += 1
    finally:
        if state.retries.get(key) is asyncio.current_task():
            del state.retries[key]
