"""The chart's engine NetworkPolicy drops real packets on the real node (kube-router enforces it).

Real pods, real TCP: an engine-like server pod carrying the labels the operator
puts on engine pods, a client with the orchestrator's labels, one without,
and one with the orchestrator's labels in another namespace. The policy is
the one `helm template` renders for this namespace, applied as it is. The
test first sees every client connect (the network works), then only the
orchestrator of the release's namespace once the policy exists, and every
client again once it is deleted: so a node that enforces nothing fails it.

The egress test does the same from the other side: an engine-labelled client
under the chart's default egress policy, with the in-cluster hub named as the
demo names it (`hack.hub.chart_values`), resolves names and reaches the hub
(pod IP and Service) but no other pod, and reaches it again once the policy
is deleted.

Only the orchestrator image (built here by hack/images.py, python inside) is
used; nothing is pulled.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hack import hub
from hack import images as image_build
from tests.conftest import ROOT, Kubectl, wait_until

CHART = ROOT / "charts" / "sdc"
HELM = str(ROOT / "bin" / "helm")
RELEASE = "np"
PORT = 8080
# One TCP connection and an HTTP answer: prints "ok" (exit 0) or the error (exit 1).
CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        s.settimeout(2)
        print("ok" if s.recv(12).startswith(b"HTTP/1.") else "no http"); sys.exit(0)
except OSError as err:
    print(type(err).__name__, err); sys.exit(1)
"""


@pytest.fixture(scope="module")
def orchestrator_image(real_node: str) -> str:
    """The orchestrator image on the node (seconds when cached and loaded)."""
    tag = image_build.normalize(image_build.chart_tags(CHART)["orchestrator"])
    if os.environ.get("SDC_TEST_IMAGES") != "loaded":
        result = subprocess.run(
            [sys.executable, str(ROOT / "hack" / "images.py"), "orchestrator"],
            text=True,
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tag


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def engines_policy(namespace: str, suffix: str = "-engines", values: tuple[str, ...] = ()) -> dict[str, Any]:
    """The chart's `<release>-engines` (or `-engines-egress`) NetworkPolicy for a release in `namespace`."""
    result = subprocess.run(
        [
            HELM,
            "template",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            *values,
            "--show-only",
            "templates/networkpolicy.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (policy,) = [d for d in docs if d["metadata"]["name"].endswith(suffix)]
    assert policy["metadata"]["namespace"] == namespace
    return dict(policy)


def pod(name: str, namespace: str, image: str, labels: dict[str, str], argv: list[str]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": argv,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if argv[1:3] == ["-m", "http.server"]:
        # The kubelet probes from the node itself: a policy must not make the server un-Ready.
        container["ports"] = [{"name": "http", "containerPort": PORT}]
        container["readinessProbe"] = {"tcpSocket": {"port": PORT}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeSelector": {"sdc.dev/real-node": "true"},
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [container],
        },
    }


def ready_pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kubectl.get("pod", name, "-n", namespace)
        conditions = obj.get("status", {}).get("conditions", [])
        return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    return dict(wait_until(f"pod {namespace}/{name} to be Ready", check, timeout=120, interval=0.5))


def connects(kubectl: Kubectl, client: tuple[str, str], address: str) -> bool:
    """Whether `client` (namespace, pod) opens a TCP connection to `address` and gets an HTTP answer."""
    namespace, name = client
    out = kubectl("exec", "-n", namespace, name, "--", "python", "-c", CONNECT, address, str(PORT), check=False).strip()
    assert out.startswith(("ok", "ConnectionRefusedError", "TimeoutError", "OSError", "timeout")), out
    return out.startswith("ok")


@pytest.mark.timeout(600)
def test_engine_policy_admits_only_the_orchestrator_on_the_real_node(
    kubectl: Kubectl, real_node: str, orchestrator_image: str, namespace: str, other_namespace: str
) -> None:
    policy = engines_policy(namespace)
    engine_labels = dict(policy["spec"]["podSelector"]["matchLabels"])
    (peer,) = policy["spec"]["ingress"][0]["from"]
    orchestrator_labels = dict(peer["podSelector"]["matchLabels"])
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}

    sleep = ["python", "-c", "import time; time.sleep(3600)"]
    kubectl.apply(
        [
            pod("engine", namespace, orchestrator_image, engine_labels, ["python", "-m", "http.server", str(PORT)]),
            pod("orchestrator", namespace, orchestrator_image, orchestrator_labels, sleep),
            pod("stranger", namespace, orchestrator_image, {"app": "stranger"}, sleep),
            pod("orchestrator", other_namespace, orchestrator_image, orchestrator_labels, sleep),
        ]
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "engine", "namespace": namespace},
            "spec": {"selector": engine_labels, "ports": [{"port": PORT, "targetPort": PORT}]},
        }
    )
    engine = ready_pod(kubectl, namespace, "engine")
    assert engine["spec"]["nodeName"] == real_node
    for ns, name in ((namespace, "orchestrator"), (namespace, "stranger"), (other_namespace, "orchestrator")):
        assert ready_pod(kubectl, ns, name)["spec"]["nodeName"] == real_node
    pod_ip = engine["status"]["podIP"]
    service_ip = kubectl.get("service", "engine", "-n", namespace)["spec"]["clusterIP"]
    orchestrator, stranger, foreign = (
        (namespace, "orchestrator"),
        (namespace, "stranger"),
        (other_namespace, "orchestrator"),
    )

    # 1. No policy yet: every client reaches the engine (the network itself works).
    for client in (orchestrator, stranger, foreign):
        assert wait_until(f"{client} to reach the engine", functools.partial(connects, kubectl, client, pod_ip), 30)

    # 2. The chart's policy: the stranger and the other namespace's "orchestrator" are dropped, by pod IP
    # and through the Service; the orchestrator still connects, and the kubelet's probe still passes.
    kubectl.apply(policy)
    wait_until("the policy to drop the stranger", lambda: not connects(kubectl, stranger, pod_ip), timeout=30)
    for address in (pod_ip, service_ip):
        assert connects(kubectl, orchestrator, address), f"the orchestrator was refused at {address}"
        assert not connects(kubectl, stranger, address), f"a pod without the orchestrator's labels got {address}"
        assert not connects(kubectl, foreign, address), f"another namespace's orchestrator got {address}"
    assert ready_pod(kubectl, namespace, "engine")["metadata"]["uid"] == engine["metadata"]["uid"]

    # 3. Policy deleted: the stranger connects again (what was dropped was the policy's doing).
    kubectl("delete", "networkpolicy", policy["metadata"]["name"], "-n", namespace)
    assert wait_until("the stranger to reach the engine again", lambda: connects(kubectl, stranger, pod_ip), timeout=30)
    assert connects(kubectl, foreign, service_ip)


# Name resolution from a pod: prints the address (exit 0) or the error (exit 1).
RESOLVE = """
import socket, sys
try:
    print(socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)[0][4][0]); sys.exit(0)
except OSError as err:
    print(type(err).__name__, err); sys.exit(1)
"""


@pytest.mark.timeout(600)
def test_engine_egress_reaches_dns_and_the_named_hub_only_on_the_real_node(
    kubectl: Kubectl, real_node: str, orchestrator_image: str, namespace: str
) -> None:
    """The chart's default egress policy, with the in-cluster hub named as the demo names it (hub.chart_values):
    an engine pod resolves names and reaches the hub, by pod IP and Service, and no other pod."""
    policy = engines_policy(namespace, "-engines-egress", tuple(hub.chart_values(namespace)))
    engine_labels = dict(policy["spec"]["podSelector"]["matchLabels"])
    server = ["python", "-m", "http.server", str(PORT)]
    sleep = ["python", "-c", "import time; time.sleep(3600)"]
    kubectl.apply(
        [
            pod("hub", namespace, orchestrator_image, {"app.kubernetes.io/name": "hub"}, server),
            pod("api-keys-holder", namespace, orchestrator_image, {"app": "stranger"}, server),
            pod("engine", namespace, orchestrator_image, engine_labels, sleep),
        ]
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hub", "namespace": namespace},
            "spec": {"selector": {"app.kubernetes.io/name": "hub"}, "ports": [{"port": PORT, "targetPort": PORT}]},
        }
    )
    hub_ip = ready_pod(kubectl, namespace, "hub")["status"]["podIP"]
    stranger_ip = ready_pod(kubectl, namespace, "api-keys-holder")["status"]["podIP"]
    assert ready_pod(kubectl, namespace, "engine")["spec"]["nodeName"] == real_node
    service_ip = kubectl.get("service", "hub", "-n", namespace)["spec"]["clusterIP"]
    engine = (namespace, "engine")
    name = f"hub.{namespace}.svc.cluster.local"

    def resolves() -> bool:
        out = kubectl("exec", "-n", namespace, "engine", "--", "python", "-c", RESOLVE, name, check=False).strip()
        return out == service_ip

    # 1. No policy: the engine reaches both pods and resolves the hub's name.
    for address in (hub_ip, stranger_ip):
        assert wait_until(f"the engine to reach {address}", functools.partial(connects, kubectl, engine, address), 30)
    assert wait_until("the hub's name to resolve", resolves, 30)

    # 2. The chart's egress policy: DNS and the hub pass, the other pod is dropped.
    kubectl.apply(policy)
    wait_until("the policy to drop the other pod", lambda: not connects(kubectl, engine, stranger_ip), timeout=30)
    assert resolves(), "DNS must pass the egress policy (port 53, any address: the node's resolver here)"
    for address in (hub_ip, service_ip):
        assert connects(kubectl, engine, address), f"the hub was refused at {address}"
    assert not connects(kubectl, engine, stranger_ip)

    # 3. Policy deleted: the other pod is reachable again (what was dropped was the policy's doing).
    kubectl("delete", "networkpolicy", policy["metadata"]["name"], "-n", namespace)
    assert wait_until("the other pod to be reachable again", lambda: connects(kubectl, engine, stranger_ip), 30)
