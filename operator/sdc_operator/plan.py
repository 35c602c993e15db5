"""Decide what to do with a LocalLLM's children: pure functions over a snapshot.

Algorithm (`plan`): for each desired object, look up the observed object of the
same kind and name.
- Missing from the snapshot: create it (the caller reads the name first, so an
  unlabelled foreign object of that name turns into a conflict, see `owns`).
- Present but not owned by this LocalLLM (no owner reference with its UID):
  a `NameConflict`; the object is never written.
- Present and owned: apply it when any field the operator sets differs from
  the observed value (`drift`): hand edits are reverted, while fields the
  operator does not set (other tools' annotations, defaults, an HPA's replicas
  when `yield_to` names its manager) are left as they are.
Objects that match are left alone, so an idle operator makes no writes and a
restart over converged objects makes none either. Server-side apply makes
every action idempotent: a plan from a stale snapshot costs at most a no-op.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

from sdc_operator.builders.common import MANAGED_BY, OWNER_LABEL
from sdc_operator.policy import source_errors
from sdc_operator.spec import parse_quantity

__all__ = [
    "Apply",
    "Plan",
    "drift",
    "event_due",
    "list_replacements",
    "manually_deleted",
    "namespace_terminating",
    "owns",
    "plan",
    "priority_clash",
    "repair_delay",
    "reported",
    "retry_delay",
    "source_errors",
    "stale_children",
    "status_patch",
    "yield_fields",
]

# Kinds deleted once a valid spec no longer wants them: the engines' own NetworkPolicy when the chart covers
# the namespace or policies are off. Never a claim (it holds downloaded weights); and an invalid spec deletes
# only its Deployment and Service, so its policy stays while its pods go.
PRUNED_KINDS = ("NetworkPolicy",)
REPLICA_MANAGERS = "replicaManagers"  # projection key: managers owning a Deployment's spec.replicas


@dataclass(frozen=True)
class Apply:
    obj: dict[str, Any]
    reason: str  # "missing" or "changed: <paths>"
    uid: str | None = None  # the observed object's UID: the write's precondition

    @property
    def key(self) -> tuple[str, str]:
        return self.obj["kind"], self.obj["metadata"]["name"]


@dataclass(frozen=True)
class Plan:
    applies: list[Apply] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # "Kind/name" of foreign objects holding a child's name


def owns(obj: dict[str, Any], uid: str, name: str) -> bool:
    """Whether `obj` belongs to the LocalLLM (`uid`, `name`): an owner reference with its UID.

    One exception: a cache claim kept by `deletePolicy: Retain` has no owner
    reference on purpose; it is this LocalLLM's when it carries the operator's
    labels for this name and no other controller owns it.
    """
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(r.get("uid") == uid for r in refs):
        return True
    labels = meta.get("labels") or {}
    return (
        obj.get("kind") == "PersistentVolumeClaim"
        and not any(r.get("controller") for r in refs)
        and labels.get(MANAGED_BY) == "sdc-operator"
        and labels.get(OWNER_LABEL) == name
    )


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The API server rewrites quantities into canonical form ("0.5" -> "500m").
    if isinstance(want, str) and isinstance(have, str):
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b
    return False


def _list_key(items: list[Any]) -> str | None:
    """Lists of named things (containers, env, ports, volumes) merge by name under server-side apply."""
    for key in ("uid", "name"):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def drift(want: Any, have: Any, path: str = "") -> list[str]:
    """Paths where `have` differs from `want`, comparing only what `want` sets (extra observed fields are fine)."""
    if isinstance(want, dict | list) and not want and have is None:  # omitted when empty
        return []
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in want.items():
            out += drift(value, have.get(key), f"{path}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(have, list):
            return [path or "."]
        key = _list_key(want)
        if key is not None:
            observed = {i.get(key): i for i in have if isinstance(i, dict)}
            out = []
            for item in want:
                out += drift(item, observed.get(item[key]), f"{path}[{item[key]}]")
            # Order matters for containers and args; for named lists only membership and content do.
            return out
        if len(want) != len(have):
            return [path]
        out = []
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            out += drift(a, b, f"{path}[{i}]")
        return out
    if have is None and want in ("", 0, False):  # the API server omits zero values
        return []
    return [] if _same_scalar(want, have) else [path]


def yield_fields(desired: dict[str, Any], observed: dict[str, Any] | None, yield_to: list[str]) -> dict[str, Any]:
    """The desired object less the fields another manager rightly owns (an HPA's replicas).

    Leaving a field out of the apply gives up the operator's claim to it, so the
    other manager's value stands and no write fights it.
    """
    if desired["kind"] != "Deployment" or observed is None:
        return desired
    if not set(observed.get(REPLICA_MANAGERS) or []) & set(yield_to):
        return desired
    out = copy.deepcopy(desired)
    out["spec"].pop("replicas", None)
    return out


def plan(
    desired: list[dict[str, Any]],
    observed: dict[tuple[str, str], dict[str, Any]],
    *,
    uid: str,
    name: str,
    yield_to: list[str] | None = None,
) -> Plan:
    applies: list[Apply] = []
    conflicts: list[str] = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        current = observed.get(key)
        if current is None:
            applies.append(Apply(obj, "missing"))
            continue
        if not owns(current, uid, name):
            conflicts.append(f"{key[0]}/{key[1]}")
            continue
        want = yield_fields(obj, current, yield_to or [])
        if paths := drift({k: v for k, v in want.items() if k in ("metadata", "spec")}, current):
            applies.append(Apply(want, "changed: " + ", ".join(paths[:5]), current["metadata"].get("uid")))
    if conflicts:  # nothing half-built beside a foreign object
        return Plan([], conflicts)
    return Plan(applies, [])


def status_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes `current` exactly `new` (None: nothing to write).

    A merge patch only adds and replaces: keys the new status lacks (an endpoint
    that no longer serves, a field of an older version) are sent as null so the
    stored status never keeps a stale value.
    """
    if current == new:
        return None
    patch: dict[str, Any] = {k: None for k in current if k not in new}
    patch.update({k: v for k, v in new.items() if current.get(k) != v})
    return patch


def list_replacements(want: dict[str, Any], paths: list[str], uid: str) -> list[dict[str, Any]]:
    """JSON-patch operations that put back whole lists an apply could not repair.

    Server-side apply merges list entries by the list's own key (a Service's
    ports by port and protocol, not by name): a port edited by hand survives an
    apply as a second entry. For each drifted path, the outermost list on it is
    replaced with the desired one; the first operation tests the UID, so the
    patch never lands on an object that was replaced meanwhile.
    """
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    seen = set()
    for path in paths:
        head = path.split("[", 1)[0]
        if head == path or head in seen:
            continue  # no list on the path: the apply owns plain fields outright
        seen.add(head)
        value: Any = want
        for part in head.strip(".").split("."):
            value = value[part]
        ops.append({"op": "replace", "path": "/" + head.strip(".").replace(".", "/"), "value": value})
    return ops if len(ops) > 1 else []


# -- handler decisions ---------------------------------------------------------------------------

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


EVENT_PHASES = ("Ready", "Failed", "Degraded")


def event_due(phase: str, last: str | None) -> bool:
    """Whether a phase change is worth a core/v1 Event (what `kubectl describe llm` lists).

    Outcomes only (Ready, Failed, Degraded), not the steps toward them (Pending, Downloading,
    Starting) that the status message already shows: an Event is a write, and hundreds of models
    coming up at once would each write one per step.
    """
    return phase != last and phase in EVENT_PHASES


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


def manually_deleted(child: dict[str, Any], uid: str, name: str) -> bool:
    """A deleted child that this LocalLLM owned and that no garbage collection of it explains: put it back.

    Garbage collection deletes children only after their owner is gone (or is
    being deleted), and that case is filtered before this is called.
    """
    return child.get("kind") in ("Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy") and owns(
        child, uid, name
    )


def stale_children(
    desired: list[dict[str, Any]], observed: dict[tuple[str, str], dict[str, Any]], uid: str, name: str
) -> list[tuple[str, str, str]]:
    """(kind, name, uid) of observed children of a pruned kind that this LocalLLM owns and no longer wants."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    return sorted(
        (kind, child_name, str(obj["metadata"]["uid"]))
        for (kind, child_name), obj in observed.items()
        if kind in PRUNED_KINDS and (kind, child_name) not in wanted and owns(obj, uid, name)
    )


def priority_clash(peers: dict[str, Any], priority: int, now: datetime.datetime, own: str) -> list[str]:
    """Live peers (in a Kopf peering object's status) other than this replica with its priority.

    Kopf pauses every replica when two share a priority, so the operator
    refuses to start into that state instead: the admin sees why at once.
    `own` is this replica's identity (its POD_ID, or `user@host/` as a prefix):
    the entry a killed earlier run of this same replica left is not a peer.
    """
    clash = []
    for peer_id, info in peers.items():
        if peer_id == own or (own.endswith("/") and peer_id.startswith(own)):
            continue
        if not isinstance(info, dict) or int(info.get("priority", -1)) != priority:
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now:
            clash.append(peer_id)
    return clash


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


def spec_pending(handled: tuple[str, int] | None, uid: str, generation: int) -> bool:
    """Whether a LocalLLM event asks for its children to be reconciled: this process has not yet
    handled this object's spec (`handled` is the uid and generation it last reconciled successfully).

    Every spec change bumps metadata.generation and nothing else does (status, labels,
    annotations), so no copy of the spec is stored on the object: the first event after a start
    reconciles each object once (a converged one plans no writes), later ones only on a new spec.
    """
    return handled != (uid, generation)
