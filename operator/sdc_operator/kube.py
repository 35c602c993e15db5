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

from kubernetes import client, config

from sdc_operator import GROUP, PLURAL, VERSION

FIELD_MANAGER = "sdc-operator"
APPLY = "application/apply-patch+yaml"


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


def _api_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except client.ApiException as err:
        message = err.reason or ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):  # a body that is not a Status
            message = json.loads(err.body or "{}").get("message", message)
        raise ApiError(int(err.status or 0), str(message)) from err


def apply(obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    common = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
    if kind == "Deployment":
        _api_call(apps().patch_namespaced_deployment, name, namespace, obj, **common)
    elif kind == "Service":
        _api_call(core().patch_namespaced_service, name, namespace, obj, **common)
    elif kind == "PersistentVolumeClaim":
        _api_call(core().patch_namespaced_persistent_volume_claim, name, namespace, obj, **common)
    elif kind == "ConfigMap":
        _api_call(core().patch_namespaced_config_map, name, namespace, obj, **common)
    else:
        raise ValueError(f"no apply for kind {kind}")


def delete(kind: str, namespace: str, name: str) -> None:
    fns = {
        "Deployment": apps().delete_namespaced_deployment,
        "Service": core().delete_namespaced_service,
    }
    try:
        _api_call(fns[kind], name, namespace, propagation_policy="Background")
    except ApiError as err:
        if err.status != 404:
            raise


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    _api_call(
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
    _api_call(core().create_namespaced_event, namespace, body)
