"""What a failed API call means: how soon to try again, whether the user is told, whether to give up.

Pure functions of the attempt and the API error. Nothing is permanent: a refusal's cause (a quota, a missing namespace, a name held
by a foreign object) may go at any time, so every failure is retried, refusals
slowly and everything else soon, never less often than the repair bound.
"""

from __future__ import annotations

REFUSED = (400, 403, 404, 409, 422)


def retry_delay(status: int) -> float:
    """How long to wait before reconciling again after an API error with this HTTP status.

    Nothing is permanent: a refusal (a 4xx: an immutable field, a quota, a
    missing namespace) is reported in the status and retried slowly, because
    the cluster or the spec may change; anything else (timeouts, 5xx, a
    stopped API server: status 0) is retried soon.
    """
    if status == 409:  # a write raced another: the next try sees the new object
        return 1.0
    if status in REFUSED or (400 <= status < 500 and status != 429):
        return 60.0
    return 5.0


REPAIR_MAX_DELAY_S = 30.0  # the bound for drift repair: a refused repair is tried at least this often


def repair_delay(attempt: int) -> float:
    """How long to wait before the `attempt`-th retry (from 1) of a drift repair that failed.

    A repair starts from a child event, and a failed one may see no further
    event (a deleted Deployment refused by a quota that is later lifted), so it
    retries on its own: 1, 2, 4, ... seconds, then every 30 s until it succeeds
    or the LocalLLM is gone. Refusals too: their cause is outside the spec.
    """
    return min(2.0 ** max(attempt - 1, 0), REPAIR_MAX_DELAY_S)


def reported(status: int) -> bool:
    """Whether an API error says something about the spec the user should read in the status."""
    return status in (400, 403, 422)


def namespace_terminating(status: int, message: str) -> bool:
    """Whether an API error says the namespace is being deleted: its children go with it, and so does the
    LocalLLM; a repair there can never succeed and is dropped rather than retried."""
    return status == 403 and "because it is being terminated" in message


NAME_CONFLICT_DELAY_S = 10.0  # a child name held by a foreign object: look again this often


def retry_after(attempt: int, status: int | None) -> float:
    """How long to wait before the `attempt`-th retry (from 1) of a reconcile that failed with an API
    error of this HTTP status (None: a child name taken by a foreign object).

    Soon at first (1, 2, 4, ... s: a raced write or a short outage is over by then), then at the
    error's own pace (`retry_delay`, or every 10 s for a name conflict) and never less often than
    the repair bound: nothing is permanent, the cause may go at any time.
    """
    pace = NAME_CONFLICT_DELAY_S if status is None else retry_delay(status)
    return min(repair_delay(attempt), pace)
