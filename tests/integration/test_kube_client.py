"""The operator's asynchronous API client (sdc_operator.kube) against the local cluster's API server,
and against servers that misbehave: every failure is an ApiError with the status, never a hang."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from kubernetes import client
from sdc_operator import kube

from hack.cluster import serviceaccount_kubeconfig
from tests.conftest import Kubectl
from tests.integration.operator_harness import run_kube


def config_map(name: str, namespace: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"key": value},
    }


def test_apply_read_delete_with_uid_preconditions(kube_api: None, kubectl: Kubectl, namespace: str) -> None:
    created = run_kube(kube.apply(config_map("cm", namespace, "one")))
    uid = created["metadata"]["uid"]
    assert created["data"] == {"key": "one"}
    assert [m["manager"] for m in created["metadata"]["managedFields"]] == [kube.FIELD_MANAGER]

    assert run_kube(kube.read_configmap_data(namespace, "cm")) == {"key": "one"}
    assert run_kube(kube.read("ConfigMap", namespace, "absent")) is None

    # A UID that is not the object's: refused, the object unchanged.
    with pytest.raises(kube.ApiError) as err:
        run_kube(kube.apply(config_map("cm", namespace, "two"), uid="00000000-0000-0000-0000-000000000000"))
    assert err.value.status == 422 and "uid" in str(err.value)  # "metadata.uid: ... field is immutable"
    with pytest.raises(kube.ApiError) as err:  # nor is an object of that name created
        run_kube(kube.apply(config_map("gone", namespace, "two"), uid="00000000-0000-0000-0000-000000000000"))
    assert err.value.status in (404, 409), err.value
    assert run_kube(kube.read("ConfigMap", namespace, "gone")) is None
    with pytest.raises(kube.ApiError) as err:
        run_kube(kube.delete("ConfigMap", namespace, "cm", uid="00000000-0000-0000-0000-000000000000"))
    assert err.value.status == 409
    assert kubectl.get("configmap", "cm", "-n", namespace)["data"] == {"key": "one"}

    updated = run_kube(kube.apply(config_map("cm", namespace, "two"), uid=uid))
    assert updated["data"] == {"key": "two"} and updated["metadata"]["uid"] == uid
    run_kube(kube.json_patch("ConfigMap", namespace, "cm", [{"op": "replace", "path": "/data/key", "value": "three"}]))
    assert kubectl.get("configmap", "cm", "-n", namespace)["data"] == {"key": "three"}

    run_kube(kube.delete("ConfigMap", namespace, "cm", uid=uid))
    run_kube(kube.delete("ConfigMap", namespace, "cm", uid=uid))  # already gone: not an error
    assert run_kube(kube.read("ConfigMap", namespace, "cm")) is None


def child_of_kind(kind: str, name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """The smallest object of each kind the operator creates."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    spec: dict[str, Any]
    if kind == "Service":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": {"ports": [{"port": 80}]}}
    if kind == "PersistentVolumeClaim":
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": spec}
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "x:1"}]}}
    spec = {"replicas": 0, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize("kind", ["Service", "PersistentVolumeClaim", "Deployment"])
def test_create_never_takes_over_an_object_of_that_name(
    kube_api: None, kubectl: Kubectl, namespace: str, kind: str
) -> None:
    """`kube.create` is a server-side apply that only creates: whatever holds the name already (here an
    object it made itself a moment ago) is refused and left as it was, and what it creates is owned by
    the operator's field manager as an apply, so a later apply without a field removes that field."""
    made = run_kube(kube.create(child_of_kind(kind, "child", namespace, {"a": "1", "b": "1"})))
    assert made is not None
    assert [(m["manager"], m["operation"]) for m in made["metadata"]["managedFields"]] == [
        (kube.FIELD_MANAGER, "Apply")
    ]
    before = kubectl.get(kind.lower(), "child", "-n", namespace)
    assert run_kube(kube.create(child_of_kind(kind, "child", namespace, {"a": "2"}))) is None
    after = kubectl.get(kind.lower(), "child", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["labels"] == {"a": "1", "b": "1"}

    uid = made["metadata"]["uid"]
    run_kube(kube.apply(child_of_kind(kind, "child", namespace, {"a": "3"}), uid=uid))
    assert kubectl.get(kind.lower(), "child", "-n", namespace)["metadata"]["labels"] == {"a": "3"}


def test_a_token_kubeconfig_authenticates_as_its_account(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ServiceAccount token (what the chart's operator runs with): the calls are that account's, not anonymous."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").strip()
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    sa_config = tmp_path / "sa.kubeconfig"
    sa_config.write_text(json.dumps(serviceaccount_kubeconfig(cluster, token)))
    monkeypatch.setenv("KUBECONFIG", str(sa_config))
    kube._configuration.cache_clear()
    try:
        with pytest.raises(kube.ApiError) as err:  # no RBAC for it: refused, and the refusal names it
            run_kube(kube.read("ConfigMap", namespace, "any"))
    finally:
        kube._configuration.cache_clear()
    assert err.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in str(err.value), err.value


def test_refusal_carries_the_api_servers_message(kube_api: None, namespace: str) -> None:
    bad = config_map("Not_A_Name", namespace, "x")
    with pytest.raises(kube.ApiError) as err:
        run_kube(kube.apply(bad))
    assert err.value.status == 422
    assert "Not_A_Name" in str(err.value)


def test_many_calls_at_once_share_the_pool(kube_api: None, kubectl: Kubectl, namespace: str) -> None:
    """More concurrent calls than connections: all complete (they wait for a connection, no error)."""

    async def burst() -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(kube.apply(config_map(f"cm-{i}", namespace, str(i))) for i in range(kube.CONNECTIONS * 2))
        )

    made = run_kube(burst())
    assert sorted(int(m["data"]["key"]) for m in made) == list(range(kube.CONNECTIONS * 2))
    listed = kubectl.get("configmaps", "-n", namespace, "-l", "!none")["items"]
    assert {f"cm-{i}" for i in range(kube.CONNECTIONS * 2)} <= {c["metadata"]["name"] for c in listed}


def test_names_that_would_change_the_path_are_refused() -> None:
    for name in ("a/b", "..", ".", ""):
        with pytest.raises(ValueError, match="not a valid object name"):
            kube.object_path("Service", "ns", name)
    with pytest.raises(ValueError, match="no API path"):
        kube.object_path("Pod", "ns", "x")  # not a kind the operator reads by name or writes
    assert kube.object_path("Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"


def _fake_api(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(kube, "_configuration", lambda: configuration)


def test_a_silent_server_is_a_timeout_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never answers
        _fake_api(monkeypatch, listener.getsockname()[1])

        async def read_with_a_short_timeout() -> dict[str, Any] | None:
            await kube.connect(timeout_s=0.5)  # the operator connects with its settings' api_timeout_s
            return await kube.read("Service", "ns", "svc")

        started = time.monotonic()
        with pytest.raises(kube.ApiError) as err:
            run_kube(read_with_a_short_timeout())
        assert time.monotonic() - started < 5, "the session's timeout was not used"
    assert err.value.status == 0 and "Timeout" in str(err.value)


def test_a_refused_connection_is_status_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        _fake_api(monkeypatch, port)
        with pytest.raises(kube.ApiError) as err:
            run_kube(kube.patch_status("ns", "llm", {"phase": "Ready"}))
    assert err.value.status == 0


class _Broken(BaseHTTPRequestHandler):
    agents: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.agents.append(self.headers.get("User-Agent", ""))
        body = b"<html>bad gateway</html>" if self.path.endswith("/html") else b"[1, 2]"
        self.send_response(502 if self.path.endswith("/html") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_bodies_that_are_not_status_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _fake_api(monkeypatch, server.server_address[1])
        with pytest.raises(kube.ApiError) as err:
            run_kube(kube.read("Service", "ns", "html"))
        assert err.value.status == 502 and "Bad Gateway" in str(err.value)
        assert run_kube(kube.read("Service", "ns", "list")) == {"kind": "Service"}  # a JSON list is no object
        assert _Broken.agents == [kube.USER_AGENT] * 2  # what the scale benchmark counts in the audit log
    finally:
        server.shutdown()
        server.server_close()
