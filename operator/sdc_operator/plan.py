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
from dataclasses import dataclass, field
from typing import Any

from sdc_operator.backoff import namespace_terminating, repair_delay, reported, retry_after, retry_delay
from sdc_operator.builders.common import MANAGED_BY, OWNER_LABEL
from sdc_operator.peering import priority_clash
from sdc_operator.policy import source_errors
from sdc_operator.spec import parse_quantity
from sdc_operator.status import status_patch
from sdc_operator.triggers import event_due, spec_pending

# Besides the plan's own names: decisions that lived here and moved to a module of their own concern
# (backoff, peering, triggers, the status patch, the source check), importable from here as before.
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
    "retry_after",
    "retry_delay",
    "source_errors",
    "spec_pending",
    "stale_children",
    "status_patch",
    "yield_fields",
]

# Kinds deleted once a valid spec no longer wants them: the engines' own NetworkPolicy when the chart covers
# the namespace or policies are off. Never a claim (it holds downloaded weights); and an invalid spec deletes
# only its Deployment and Service, so its policy stays while its pods go.
PRUNED_KINDS = ("NetworkPolicy",)
REPLICA_MANAGERS = "replicaManagers"  # projection key: managers owning a Deployment's spec.replicas
SHOWN_PATHS = 5  # drifted paths an Apply's reason names (the log line); `Apply.paths` has them all


@dataclass(frozen=True)
class Apply:
    obj: dict[str, Any]
    reason: str  # for the log: "missing" or "changed: <the first few paths>"
    uid: str | None = None  # the observed object's UID: the write's precondition
    paths: tuple[str, ...] = ()  # every drifted path: what a refused apply must repair by replacing lists

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
            summary = ", ".join(paths[:SHOWN_PATHS]) + (
                f" and {len(paths) - SHOWN_PATHS} more" if len(paths) > SHOWN_PATHS else ""
            )
            applies.append(Apply(want, f"changed: {summary}", current["metadata"].get("uid"), tuple(paths)))
    if conflicts:  # nothing half-built beside a foreign object
        return Plan([], conflicts)
    return Plan(applies, [])


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
