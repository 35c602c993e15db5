"""All calls to the Kubernetes API: server-side apply, delete, status patch. Asynchronous.

The only module that talks to the API (the reconciler, status writer and publisher call it). The calls run on the
operator's event loop over aiohttp (the HTTP client Kopf itself uses, so no
second stack and no worker threads); the `kubernetes` package only loads the
credentials (in-cluster service account, or $KUBECONFIG). Responses are plain
JSON. Server-side apply with one field manager makes every write idempotent and
lets a restarted operator converge to the same objects without reading them first.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import socket
import ssl
import weakref
from typing import Any, cast

import aiohttp
from kubernetes import client, config

from sdc_operator import GROUP, PLURAL, VERSION

FIELD_MANAGER = "sdc-operator"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT_S = 20.0  # every call has one: a hung API server turns into an ApiError, never a stuck handler
USER_AGENT = "sdc-operator"  # how the API server's audit log names these calls (Kopf's own say kopf/...)
CONNECTIONS = 32  # concurrent requests per loop; more wait for a connection (within the same timeout)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@functools.cache
def _configuration() -> client.Configuration:
    """Where the API server is and how to prove who we are (read once: the files it names are reread
    by the TLS context; an in-cluster token is refreshed by the loader's hook on every use)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            os.environ.get("KUBECONFIG"), client_configuration=configuration
        )  # $KUBECONFIG as it is now (the client's default was read when it was imported), else ~/.kube/config
    return configuration


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:  # only when the kubeconfig says insecure-skip-tls-verify
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


# One session per event loop: a session belongs to the loop it was made on (the operator has one; tests may
# run several loops in turn). Its connection pool is reused, so no TLS handshake per call.
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()


def _session(timeout_s: float | None = None) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        configuration = _configuration()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=_ssl_context(configuration)),
            json_serialize=json.dumps,
            timeout=aiohttp.ClientTimeout(total=timeout_s or DEFAULT_TIMEOUT_S),
        )
        _sessions[loop] = session
    return session


async def connect(timeout_s: float) -> None:
    """Open this loop's session with a timeout for every call on it (the operator's `api_timeout_s`, at its
    start). The timeout belongs to the session, so no module-wide setting is patched from outside; calls on a
    loop that never connected get a session with the default timeout."""
    await close()
    _session(timeout_s)


async def close() -> None:
    """Close this loop's session (the operator's cleanup; tests after their calls)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def _headers(content_type: str | None, accept: str = "application/json") -> dict[str, str]:
    headers = {"Accept": accept, "User-Agent": USER_AGENT}
    # The credentials as the client would send them: a bearer token (a ServiceAccount's, refreshed by the
    # in-cluster loader's hook on each read; an exec plugin's; a kubeconfig's), basic auth. Client
    # certificates are in the TLS context instead.
    auth_settings = cast(dict[str, dict[str, Any]], _configuration().auth_settings())
    for auth in auth_settings.values():
        if auth.get("in") == "header" and auth.get("value"):
            headers[str(auth["key"])] = str(auth["value"])
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def _status_message(raw: bytes, fallback: str) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return fallback
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else fallback


async def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str | None = None,
    params: dict[str, str] | None = None,
    accept: str = "application/json",
) -> dict[str, Any]:
    """One request; the response body as plain JSON. Refused, reset or timed out is status 0 (retry later)."""
    data = None if body is None else json.dumps(body)
    try:
        async with _session().request(
            method,
            _configuration().host.rstrip("/") + path,  # a host may carry a path prefix (an API proxy)
            data=data,
            params=params,
            headers=_headers(content_type or ("application/json" if data is not None else None), accept),
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                raise ApiError(response.status, _status_message(raw, response.reason or str(response.status)))
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise ApiError(0, f"{type(err).__name__}: {err}") from err
    try:
        out = json.loads(raw or b"{}")
    except ValueError as err:
        raise ApiError(0, f"the API server sent a body that is not JSON: {err}") from err
    return out if isinstance(out, dict) else {}


_PATHS: dict[str, str] = {
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "Service": "/api/v1/namespaces/{namespace}/services",
    "PersistentVolumeClaim": "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    "Secret": "/api/v1/namespaces/{namespace}/secrets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Event": "/api/v1/namespaces/{namespace}/events",
    "LocalLLM": f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}",
}


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a kind's collection in a namespace, or of one object in it."""
    if kind not in _PATHS:
        raise ValueError(f"no API path for kind {kind}")
    for part in (namespace,) if name is None else (namespace, name):
        if not part or "/" in part or part in (".", ".."):  # names come from the cluster; never a path trick
            raise ValueError(f"not a valid object name: {part!r}")
    base = _PATHS[kind].format(namespace=namespace)
    return base if name is None else f"{base}/{name}"


async def apply(obj: dict[str, Any], *, uid: str | None = None) -> dict[str, Any]:
    """Server-side apply as the operator's field manager.

    `force` takes over fields a person changed by hand on an object the caller
    has checked is ours; `uid` (the UID the caller saw) makes the write fail instead
    of touching an object that was replaced by another of that name (422, "uid:
    field is immutable") or creating one where it went.
    """
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    if uid is not None:
        obj = {**obj, "metadata": {**obj["metadata"], "uid": uid}}
    out = await _call(
        "PATCH",
        object_path(obj["kind"], namespace, name),
        body=obj,
        content_type=APPLY,
        params={"fieldManager": FIELD_MANAGER, "force": "true"},
    )
    out.setdefault("kind", obj["kind"])
    return out


# No object ever has this resourceVersion (etcd's revisions are int64 and count up from 1). An apply that
# carries it creates the object when the name is free and is refused with a 409 when anything holds the
# name: a create can never take over an object that appeared after the caller last looked.
NO_OBJECT_HAS_THIS_VERSION = str(2**63 - 1)


async def create(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Server-side apply that only creates (the operator's field manager owns every field it sets, as with
    `apply`): the new object, or None when an object of that name already exists, whoever's it is."""
    metadata = {**obj["metadata"], "resourceVersion": NO_OBJECT_HAS_THIS_VERSION}
    try:
        return await apply({**obj, "metadata": metadata})
    except ApiError as err:
        if err.status == 409:
            return None
        raise


async def json_patch(kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
    """An RFC 6902 patch: replaces whole lists where server-side apply merges entries by another key."""
    await _call(
        "PATCH",
        object_path(kind, namespace, name),
        body=ops,
        content_type=JSON_PATCH,
        params={"fieldManager": FIELD_MANAGER},
    )


async def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as plain JSON, or None when there is none of that name."""
    try:
        out = await _call("GET", object_path(kind, namespace, name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise
    out.setdefault("kind", kind)
    return out


# Only an object's metadata: a Secret's values never reach the operator (RBAC cannot grant metadata alone,
# so the operator asks for no more than it needs).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


async def read_labels(kind: str, namespace: str, name: str) -> dict[str, str] | None:
    """The labels of an object (read as PartialObjectMetadata), or None when there is none of that name."""
    try:
        out = await _call("GET", object_path(kind, namespace, name), accept=METADATA_ONLY)
    except ApiError as err:
        if err.status == 404:
            return None
        raise
    labels = (out.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


async def delete(kind: str, namespace: str, name: str, *, uid: str) -> None:
    """Delete only the object with this UID: a foreign object of the same name makes it a 409, not a loss."""
    options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": uid},
    }
    try:
        await _call("DELETE", object_path(kind, namespace, name), body=options)
    except ApiError as err:
        if err.status != 404:
            raise


async def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    path = object_path("LocalLLM", namespace, name) + "/status"
    await _call("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)


async def pod_log_tail(namespace: str, pod: str, container: str, *, lines: int, limit_bytes: int) -> str:
    """The last lines of one container's log (bounded twice: lines and bytes). Read-only (pods/log get)."""
    params = {"container": container, "tailLines": str(lines), "limitBytes": str(limit_bytes)}
    for part in (namespace, pod):
        if not part or "/" in part or part in (".", ".."):  # names come from the cluster; never a path trick
            raise ValueError(f"not a valid object name: {part!r}")
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
    try:
        async with _session().get(
            _configuration().host.rstrip("/") + path,
            params=params,
            headers=_headers(None, accept="*/*"),  # the API server refuses Accept: text/plain (406)
        ) as response:
            raw = await response.read()  # bounded by limitBytes on the server's side
            if response.status >= 400:
                raise ApiError(response.status, _status_message(raw, response.reason or str(response.status)))
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise ApiError(0, f"{type(err).__name__}: {err}") from err
    return raw.decode("utf-8", errors="replace")


async def read_configmap_data(namespace: str, name: str) -> dict[str, str] | None:
    cm = await read("ConfigMap", namespace, name)
    return None if cm is None else {str(k): str(v) for k, v in (cm.get("data") or {}).items()}


def _peering_paths(name: str, namespaces: list[str]) -> list[tuple[str, str]]:
    """(collection, object) paths of the peering object(s): cluster-wide, or one per watched namespace."""
    if not namespaces:
        base = "/apis/kopf.dev/v1/clusterkopfpeerings"
        return [(base, f"{base}/{name}")]
    out = []
    for namespace in namespaces:
        base = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
        out.append((base, f"{base}/{name}"))
    return out


async def ensure_peering(name: str, namespaces: list[str]) -> None:
    """Create Kopf's peering object(s) if missing: replicas can only see each other through one."""
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    for collection, _ in _peering_paths(name, namespaces):
        try:
            await _call(
                "POST", collection, body={"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
            )
        except ApiError as err:
            if err.status != 409:
                raise


async def peering_status(name: str, namespaces: list[str]) -> dict[str, Any]:
    """The peers Kopf recorded in the peering object(s) (empty when there is none yet)."""
    out: dict[str, Any] = {}
    for _, path in _peering_paths(name, namespaces):
        try:
            obj = await _call("GET", path)
        except ApiError as err:
            if err.status == 404:
                continue
            raise
        out.update(obj.get("status") or {})
    return out


async def post_event(namespace: str, name: str, uid: str, kind: str, reason: str, message: str) -> None:
    """A core/v1 Event on the LocalLLM: what `kubectl describe llm` lists."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
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
    await _call("POST", object_path("Event", namespace), body=body)
