"""Shared fixtures: the cluster the integration tests run against.

The tests never use whatever kube-context happens to be current. They either
bring up the project's own local control plane (`hack/cluster.py`), reuse it
when it is already up, or use the cluster named explicitly by
SDC_TEST_KUBECONFIG (e.g. a kind cluster in CI where Docker exists).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = str(ROOT / "bin" / "kubectl")

# CPU pods that should be simulated by KWOK (Running without containers) say so: while a real node
# runs, the simulated CPU node is tainted and CPU workloads otherwise land on the real node.
SIMULATED_TOLERATION = {"key": "sdc.dev/simulated", "operator": "Exists", "effect": "NoSchedule"}
SIMULATED_NODE_SELECTOR = {"type": "kwok"}


def simulated(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A pod spec placed on the simulated CPU node (a copy; GPU pods need no help: only KWOK has GPUs)."""
    return {
        **pod_spec,
        "nodeSelector": {**pod_spec.get("nodeSelector", {}), **SIMULATED_NODE_SELECTOR},
        "tolerations": [*pod_spec.get("tolerations", []), SIMULATED_TOLERATION],
    }


def plain_deployment(name: str, namespace: str, image: str, replicas: int = 1) -> dict[str, Any]:
    """A Deployment with no operator behind it, placed on the simulated CPU node."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": simulated({"containers": [{"name": name, "image": image}]}),
            },
        },
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def refuse_foreign(kubeconfig: Path) -> Path:
    """The kubeconfig, if every cluster in it is on this machine; an AssertionError otherwise.

    The suite creates and deletes namespaces: it must never reach a shared cluster, whatever
    KUBECONFIG or the current kube-context say. Loopback servers only (the local control plane,
    or a kind cluster named by SDC_TEST_KUBECONFIG).
    """
    import ipaddress
    from urllib.parse import urlparse

    import yaml

    config = yaml.safe_load(kubeconfig.read_text()) or {}
    servers = [str((c.get("cluster") or {}).get("server", "")) for c in config.get("clusters") or []]
    assert servers, f"{kubeconfig} names no cluster"
    for server in servers:
        host = urlparse(server).hostname or ""
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        assert local, f"refusing {kubeconfig}: its cluster {server} is not on this machine"
    return kubeconfig


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    given = os.environ.get("SDC_TEST_KUBECONFIG")
    if given:
        yield refuse_foreign(Path(given))
        return
    cluster = [sys.executable, str(ROOT / "hack" / "cluster.py")]
    started = subprocess.run([*cluster, "status"], capture_output=True, check=False).returncode != 0
    if started:
        subprocess.run([*cluster, "up"], check=True)
    yield refuse_foreign(ROOT / ".cluster" / "kubeconfig")
    if started and not os.environ.get("SDC_KEEP_CLUSTER"):
        subprocess.run([*cluster, "down"], check=False)


@pytest.fixture(scope="session")
def real_node(kubectl: Kubectl) -> str:
    """The name of the cluster's real node (hack/node.py); skips where there is none by choice."""
    nodes = kubectl.get("nodes", "-l", "type=real")["items"]
    if not nodes:
        if os.environ.get("SDC_TEST_KUBECONFIG") or os.environ.get("SDC_REAL_NODE") == "0":
            pytest.skip("this cluster has no real node (SDC_TEST_KUBECONFIG or SDC_REAL_NODE=0)")
        pytest.fail("the local cluster came up without its real node")
    return str(nodes[0]["metadata"]["name"])


@pytest.fixture(scope="session")
def images(real_node: str) -> None:
    """The images built (cached by content) and loaded into the real node: seconds when warm,
    about half an hour cold (torch). SDC_TEST_IMAGES=loaded uses what the node already has
    (iterating on the tests while a code change would reload the 6 GB runtime image)."""
    if os.environ.get("SDC_TEST_IMAGES") == "loaded":
        return
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "images.py")], text=True, capture_output=True, check=False
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


class Kubectl:
    """`kubectl` bound to the test cluster's kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [KUBECTL, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout + (result.stderr if not check else "")

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str) -> str:
        items = obj if isinstance(obj, list) else [obj]
        return self("apply", "-f", "-", *extra, stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def get(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json"))


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(
            f"\n--- events in {name} ---\n"
            + kubectl("get", "events", "-n", name, "--sort-by=.lastTimestamp", check=False)
        )
        print(kubectl("get", "all,pvc,localllms", "-n", name, "-o", "wide", check=False))
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


def globbed(folder: Path, pattern: str) -> list[Path]:
    """The files a loop runs over: never zero, so a moved folder fails the test instead of passing it."""
    found = sorted(folder.glob(pattern))
    assert found, f"no {pattern} under {folder}"
    return found


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
