"""What the watches keep of each object, and how the rest reads Kopf's indexes.

Level-based: indexes hold every LocalLLM and every labelled child (Deployment,
Pod, PVC, Service) as the watches report them, so deriving a status costs no
API call. Each entry is a projection: only the fields the operator reads (a
Pod's spec, most of its memory, is dropped). The indexing functions themselves
are Kopf entry points and live in `handlers`; an index reads as a mapping of
(namespace, owner name) to the objects stored under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sdc_operator import KIND
from sdc_operator.plan import REPLICA_MANAGERS, owns
from sdc_operator.state import Key, State

Index = Mapping[Any, Iterable[dict[str, Any]]]
INDEX_NAMES = ("llm_index", "deployment_index", "pod_index", "claim_index", "service_index", "policy_index")
CHILD_INDEXES = {
    "Deployment": "deployment_index",
    "PersistentVolumeClaim": "claim_index",
    "Service": "service_index",
    "NetworkPolicy": "policy_index",  # the engines' own, where the chart renders none (engine_network)
}
# The children's watches: (group, version, plural) as in the handlers' decorators.
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("v1", "pods"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "services"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
_KEPT_METADATA = (
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


def replica_managers(meta: dict[str, Any]) -> list[str]:
    """Managers that own a Deployment's spec.replicas (an HPA writes it through the scale subresource)."""
    out = []
    for entry in meta.get("managedFields") or []:
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            out.append(str(entry.get("manager")))
    return out


def projection(body: dict[str, Any]) -> dict[str, Any]:
    """The part of an object the operator reads, as the indexes keep it."""
    meta = body.get("metadata", {})
    out = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in _KEPT_METADATA},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    if body.get("kind") in ("Deployment", KIND):  # a LocalLLM's: who scaled it (to zero), for its status
        out[REPLICA_MANAGERS] = replica_managers(meta)
    if body.get("kind") == "Pod":
        out["spec"] = {}  # the status reads a pod's conditions only: its spec is most of its memory
    return out


def one(index: Index, key: Key) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


def every(index: Index, key: Key) -> list[dict[str, Any]]:
    store = index.get(key)
    return list(store) if store else []


def own_deployment(idx: dict[str, Any], key: Key, uid: str) -> dict[str, Any] | None:
    """The LocalLLM's own Deployment (its name, owned by its UID) as the deployment index shows it."""
    name = key[1]
    return next(
        (d for d in every(idx["deployment_index"], key) if d["metadata"]["name"] == name and owns(d, uid, name)),
        None,
    )


def remember(state: State, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The indexes Kopf passed to a handler, kept in the state for the debounced flushes and the retries."""
    idx = {n: kwargs[n] for n in INDEX_NAMES}
    state.indexes.update(idx)  # the same live objects every time
    return idx


def observed_children(key: Key, idx: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """A LocalLLM's children of the kinds it creates, by (kind, name), as the indexes show them."""
    out = {}
    for kind, name in CHILD_INDEXES.items():
        for child in every(idx[name], key):
            if child.get("kind") == kind:
                out[(kind, child["metadata"]["name"])] = child
    return out
