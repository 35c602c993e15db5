"""All calls to the Kubernetes API: server-side apply, delete, status patch.

The only module besides `handlers` that imports the client. Server-side apply
with one field manager makes every write idempotent and lets a restarted
operator converge to the same objects without reading them first.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import socket
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config

from sdc_operator import GROUP, PLURAL, VERSION

FIELD_MANAGER = "sdc-operator"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@functools.cache
def _client() -> client.ApiClient:
    """One shared client: its connection pool is reused (no TLS handshake per call), and it is thread-safe."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # $KUBECONFIG
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(_client())


def core() -> client.CoreV1Api:
    return client.CoreV1Api(_client())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(_client())


TIMEOUT_S = 20.0  # every call has one: a hung API server turns into an ApiError, never a stuck handler


def _api_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("_request_timeout", TIMEOUT_S)
    try:
        return fn(*args, **kwargs)
    except client.ApiException as err:
        message = err.reason or ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):  # a body that is not a Status
            message = json.loads(err.body or "{}").get("message", message)
        raise ApiError(int(err.status or 0), str(message)) from err
    except (OSError, urllib3.exceptions.HTTPError) as err:  # refused, reset, timed out: retry later
        raise ApiError(0, f"{type(err).__name__}: {err}") from err


def _raw_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A call whose response is read as plain JSON: the client's model classes cost milliseconds of CPU
    per object to build (and more to turn back into a dict), which hundreds of writes at once feel."""
    response = _api_call(fn, *args, _preload_content=False, **kwargs)
    try:
        body = json.loads(response.data or b"{}")
    except ValueError as err:
        raise ApiError(0, f"the API server sent a body that is not JSON: {err}") from err
    finally:
        response.release_conn()
    return body if isinstance(body, dict) else {}


_KINDS: dict[str, tuple[Callable[[], Any], str]] = {
    "Deployment": (apps, "deployment"),
    "Service": (core, "service"),
    "PersistentVolumeClaim": (core, "persistent_volume_claim"),
    "ConfigMap": (core, "config_map"),
}


def _method(verb: str, kind: str) -> Callable[..., Any]:
    if kind not in _KINDS:
        raise ValueError(f"no {verb} for kind {kind}")
    api, suffix = _KINDS[kind]
    return getattr(api(), f"{verb}_namespaced_{suffix}")  # type: ignore[no-any-return]


def apply(obj: dict[str, Any], *, uid: str | None = None) -> dict[str, Any]:
    """Server-side apply as the operator's field manager.

    `force` takes over fields a person changed by hand on an object the caller
    has checked is ours; `uid` (the UID the caller saw) makes the write fail with
    409 instead of touching an object that was replaced by another of that name.
    """
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    if uid is not None:
        obj = {**obj, "metadata": {**obj["metadata"], "uid": uid}}
    out = _raw_call(
        _method("patch", obj["kind"]),
        name,
        namespace,
        obj,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY,
    )
    out.setdefault("kind", obj["kind"])
    return out


def json_patch(kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
    """An RFC 6902 patch: replaces whole lists where server-side apply merges entries by another key."""
    _raw_call(_method("patch", kind), name, namespace, ops, field_manager=FIELD_MANAGER, _content_type=JSON_PATCH)


def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as plain JSON, or None when there is none of that name."""
    try:
        out = _raw_call(_method("read", kind), name, namespace)
    except ApiError as err:
        if err.status == 404:
            return None
        raise
    out.setdefault("kind", kind)
    return out


def delete(kind: str, namespace: str, name: str, *, uid: str) -> None:
    """Delete only the object with this UID: a foreign object of the same name makes it a 409, not a loss."""
    try:
        _raw_call(
            _method("delete", kind),
            name,
            namespace,
            propagation_policy="Background",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
        )
    except ApiError as err:
        if err.status != 404:
            raise


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    _raw_call(
        custom().patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )


def read_configmap_data(namespace: str, name: str) -> dict[str, str] | None:
    try:
        cm = _api_call(core().read_namespaced_config_map, name, namespace)
    except ApiError as err:
        if err.status == 404:
            return None
        raise
    return dict(cm.data or {})


def ensure_peering(name: str, namespaces: list[str]) -> None:
    """Create Kopf's peering object(s) if missing: replicas can only see each other through one."""
    api = custom()
    body: dict[str, Any] = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    try:
        if not namespaces:
            _api_call(
                api.create_cluster_custom_object,
                "kopf.dev",
                "v1",
                "clusterkopfpeerings",
                {**body, "kind": "ClusterKopfPeering"},
            )
        for namespace in namespaces:
            try:
                _api_call(
                    api.create_namespaced_custom_object,
                    "kopf.dev",
                    "v1",
                    namespace,
                    "kopfpeerings",
                    {**body, "kind": "KopfPeering"},
                )
            except ApiError as err:
                if err.status != 409:
                    raise
    except ApiError as err:
        if err.status != 409:
            raise


def peering_status(name: str, namespaces: list[str]) -> dict[str, Any]:
    """The peers Kopf recorded in the peering object(s) (empty when there is none yet)."""
    api = custom()
    out: dict[str, Any] = {}
    targets: list[str | None] = list(namespaces) or [None]
    for namespace in targets:
        try:
            if namespace is None:
                obj = _api_call(api.get_cluster_custom_object, "kopf.dev", "v1", "clusterkopfpeerings", name)
            else:
                obj = _api_call(api.get_namespaced_custom_object, "kopf.dev", "v1", namespace, "kopfpeerings", name)
        except ApiError as err:
            if err.status == 404:
                continue
            raise
        out.update((obj or {}).get("status") or {})
    return out


def post_event(namespace: str, name: str, uid: str, kind: str, reason: str, message: str) -> None:
    """A core/v1 Event on the LocalLLM: what `kubectl describe llm` lists."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LocalLLM",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": socket.gethostname(),
    }
    _raw_call(core().create_namespaced_event, namespace, body)
