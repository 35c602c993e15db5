"""Shared by the real-node measurements (scale from zero, drain, two vLLM replicas): a release of the chart on
the local cluster's real node, and what happens to its pods, timed as it happens.

Timestamps are this machine's wall clock (`time.time()`) taken when a watch event arrives (`kubectl get -w`,
milliseconds after the API server stores the change), not the objects' own second-resolution timestamps; the
API server's audit log (SDC_CLUSTER_AUDIT=1 at `hack/cluster.py up`) gives the scale writes with microseconds.
The node runs on this machine, so both clocks are one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hack import hub
from hack.node import NODE_LINKS_CIDR
from tests.conftest import KUBECTL, ROOT, Kubectl, wait_until

CHART = ROOT / "charts" / "sdc"
HELM = str(ROOT / "bin" / "helm")
REVISION = "0" * 40  # the hub serves every revision (tests/integration/operator_harness.REVISION)
RUNTIME_IMAGE = "ghcr.io/sdc-llm/sdc-runtime:0.1.0"
CLUSTER_DIR = Path(os.environ.get("SDC_CLUSTER_DIR", ROOT / ".cluster"))
AUDIT_LOG = CLUSTER_DIR / "logs" / "audit.log"
# What the host may reach: the release's pods and the node's link (this machine), for the chat API and,
# for the measurements, the engines' /health and /v1 directly.
HOST_FROM = [{"podSelector": {}}, {"ipBlock": {"cidr": NODE_LINKS_CIDR}}]


def cluster_kubeconfig() -> Path | None:
    """The local cluster's kubeconfig if it is up with its real node, else None (benchmarks then skip)."""
    kubeconfig = CLUSTER_DIR / "kubeconfig"
    if not kubeconfig.exists():
        return None
    out = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", "get", "nodes", "-l", "type=real", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return kubeconfig if out.returncode == 0 and out.stdout.strip() else None


def helm(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run([HELM, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}: {result.stderr}")
    return result.stdout


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Release:
    """The chart installed in its own namespace with an in-cluster hub serving tiny models."""

    kubectl: Kubectl
    kubeconfig: Path
    name: str
    base: str = ""  # the orchestrator's Service, http://ClusterIP:port
    key: str = ""
    extra_values: list[str] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.name

    @property
    def fullname(self) -> str:
        return self.name if "sdc" in self.name else f"{self.name}-sdc"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def install(self, hub_root: Path) -> None:
        values = [
            # The hub as the engines' model source, and their egress to it: the chart's engine egress policy
            # (on by default) admits only DNS and public HTTPS, and without this every download was refused.
            *hub.chart_values(self.ns),
            "--set-json",
            f"networkPolicy.chatIngressFrom={json.dumps(HOST_FROM)}",
            "--set-json",
            f"networkPolicy.engineIngressFrom={json.dumps(HOST_FROM[1:])}",
            *self.extra_values,
        ]
        self.kubectl("create", "namespace", self.ns)
        self.kubectl.apply(hub.objects(self.ns, hub_root, RUNTIME_IMAGE, REVISION))
        helm(self.kubeconfig, "install", self.name, str(CHART), "-n", self.ns, *values, "--take-ownership")
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/name in (sdc-operator,sdc-orchestrator)"
        wait_until(
            "the operator and the orchestrator to run",
            lambda: (
                len(ps := self.pods(selector)) >= 2
                and all(any(c.get("started") for c in p.get("status", {}).get("containerStatuses", [])) for p in ps)
            ),
            timeout=300,
            interval=1,
        )
        svc = self.kubectl.get("service", f"{self.fullname}-orchestrator", "-n", self.ns)
        self.base = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
        # Started is not routable: until the pod is Ready and kube-proxy has its endpoint, connections to the
        # Service are refused or their SYNs dropped and retried (a burst sent then lost 5 of 64 to
        # ConnectError and timed 4 s of kube-proxy's catching up as the orchestrator's ask).
        wait_until("the orchestrator's Service to answer", self._routable, timeout=120, interval=0.5)
        encoded = self.kubectl(
            "get", "secret", f"{self.fullname}-api-keys", "-n", self.ns, "-o", "jsonpath={.data.keys}"
        )
        import base64

        self.key = base64.b64decode(encoded).decode().splitlines()[0].split(":", 1)[1]

    def _routable(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return list(self.kubectl.get("pods", "-n", self.ns, "-l", selector)["items"])

    def uninstall(self) -> None:
        self.kubectl("delete", "llm", "--all", "-n", self.ns, "--wait=true", "--timeout=120s", check=False)
        subprocess.run(
            [HELM, f"--kubeconfig={self.kubeconfig}", "uninstall", self.name, "-n", self.ns], capture_output=True
        )
        self.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)


def new_release(kubectl: Kubectl, kubeconfig: Path, prefix: str) -> Release:
    return Release(kubectl, kubeconfig, f"{prefix}-{uuid.uuid4().hex[:6]}")


def localllm(name: str, namespace: str, runtime: str, model: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": runtime, "model": {"name": model, "revision": REVISION}, **spec}
    body.setdefault("resources", {"gpus": 0})
    return {
        "apiVersion": "llm.sdc.dev/v1alpha1",
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


class Watch:
    """`kubectl get -w -o json --output-watch-events` in a thread: `on_event(type, object, arrival time)`."""

    def __init__(
        self, kubeconfig: Path, args: list[str], on_event: Callable[[str, dict[str, Any], float], None]
    ) -> None:
        self.proc = subprocess.Popen(
            [KUBECTL, f"--kubeconfig={kubeconfig}", "get", *args, "-w", "-o", "json", "--output-watch-events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.on_event = on_event
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.proc.stdout is None:
            return
        buffer: list[str] = []
        for line in self.proc.stdout:  # one event a line (compact JSON); pretty-printed: ends with "}" alone
            buffer.append(line)
            if not (line.startswith("{") and len(buffer) == 1) and line.rstrip("\n") != "}":
                continue
            try:
                event = json.loads("".join(buffer))
            except json.JSONDecodeError:
                continue
            buffer.clear()
            self.on_event(event["type"], event["object"], time.time())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class PodTimes:
    name: str
    ip: str = ""
    created: float | None = None
    scheduled: float | None = None
    init_started: float | None = None
    init_done: float | None = None
    started: float | None = None
    engine_up: float | None = None  # its /health first answered 200 (probed from here every 0.1 s)
    ready: float | None = None
    published: float | None = None  # the endpoints document first named it
    terminating: float | None = None
    unpublished: float | None = None
    gone: float | None = None
    image_present: bool | None = None


class PodClock:
    """Per pod of one LocalLLM: when it was created, scheduled, fetched its model, started, answered, was
    Ready, published, marked for deletion, unpublished and gone."""

    def __init__(self, release: Release, llm: str, port: int, probe: bool = True) -> None:
        self.release, self.port, self.probe = release, port, probe
        self.llm = llm
        self.pods: dict[str, PodTimes] = {}
        self.lock = threading.Lock()
        self._probing: set[str] = set()
        self.watches = [
            Watch(release.kubeconfig, ["pods", "-n", release.ns, "-l", f"llm.sdc.dev/localllm={llm}"], self._pod),
            Watch(
                release.kubeconfig,
                ["configmap", f"{release.fullname}-endpoints", "-n", release.ns],
                self._document,
            ),
        ]

    def _times(self, name: str) -> PodTimes:
        with self.lock:
            return self.pods.setdefault(name, PodTimes(name))

    def _pod(self, kind: str, pod: dict[str, Any], at: float) -> None:
        t = self._times(pod["metadata"]["name"])
        status = pod.get("status", {})
        t.created = t.created or at
        t.ip = status.get("podIP") or t.ip
        if pod["spec"].get("nodeName") and t.scheduled is None:
            t.scheduled = at
        inits = status.get("initContainerStatuses") or []
        if inits and t.init_started is None and ("running" in inits[0]["state"] or "terminated" in inits[0]["state"]):
            t.init_started = at
        if inits and t.init_done is None and "terminated" in inits[-1]["state"]:
            t.init_done = at
        mains = status.get("containerStatuses") or []
        if mains and t.started is None and "running" in mains[0]["state"]:
            t.started = at
            if not inits:
                t.init_started = t.init_done = at
        if pod_ready(pod) and t.ready is None:
            t.ready = at
        if pod["metadata"].get("deletionTimestamp") and t.terminating is None:
            t.terminating = at
        if kind == "DELETED":
            t.gone = at
        if self.probe and t.ip and t.started and t.engine_up is None and t.name not in self._probing:
            self._probing.add(t.name)
            threading.Thread(target=self._probe_health, args=(t,), daemon=True).start()

    def _probe_health(self, t: PodTimes) -> None:
        deadline = time.time() + 1800
        with httpx.Client(timeout=1) as client:
            while t.engine_up is None and t.gone is None and time.time() < deadline:
                try:
                    if client.get(f"http://{t.ip}:{self.port}/health").status_code == 200:
                        t.engine_up = time.time()
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)

    def _document(self, kind: str, cm: dict[str, Any], at: float) -> None:
        doc = json.loads(cm.get("data", {}).get("endpoints.json") or "{}")
        named = {str(e.get("replica")) for e in doc.get("endpoints", []) if e.get("localLLM") == self.llm}
        for name in named:  # pods published before this clock started
            self._times(name)
        with self.lock:
            pods = list(self.pods.values())
        for t in pods:
            if t.name in named and t.published is None:
                t.published = at
            if t.published is not None and t.name not in named and t.unpublished is None:
                t.unpublished = at

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()

    def image_events(self) -> None:
        """Whether each pod's images were already on the node (kubelet's Pulled event says so)."""
        events = self.release.kubectl.get("events", "-n", self.release.ns)["items"]
        for t in self.pods.values():
            messages = [
                e.get("message", "")
                for e in events
                if e.get("involvedObject", {}).get("name") == t.name and e.get("reason") in ("Pulled", "Pulling")
            ]
            if messages:
                t.image_present = all("already present" in m for m in messages)


def audit_scale_writes(namespace: str, name: str, since: float) -> list[tuple[float, str, str]] | None:
    """Writes to LocalLLM `name`'s /scale subresource since `since`: (time, verb, user), from the audit log;
    None when the cluster keeps none (not started with SDC_CLUSTER_AUDIT=1): unknown, not zero."""
    if not AUDIT_LOG.exists():
        return None
    out = []
    with AUDIT_LOG.open() as f:
        for line in f:
            if '"scale"' not in line or namespace not in line:
                continue
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if (ref.get("resource"), ref.get("subresource"), ref.get("namespace"), ref.get("name")) != (
                "localllms",
                "scale",
                namespace,
                name,
            ) or event.get("verb") not in ("patch", "update"):
                continue
            at = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                out.append((at, event["verb"], event.get("user", {}).get("username", "")))
    return out


@dataclass
class Answer:
    status: int
    sent: float
    first_token: float | None  # wall time of the first content chunk
    done: float
    replica: str
    error: str = ""


async def one_stream(client: httpx.AsyncClient, release: Release, model: str, prompt: str, max_tokens: int) -> Answer:
    """An OpenAI streamed chat through the orchestrator; the time its first content arrives."""
    sent = time.time()
    first: float | None = None
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    try:
        async with client.stream(
            "POST", f"{release.base}/v1/chat/completions", json=body, headers=release.auth
        ) as resp:
            replica = resp.headers.get("x-sdc-replica", "")
            if resp.status_code != 200:
                body_text = (await resp.aread()).decode(errors="replace")[:300]
                return Answer(resp.status_code, sent, None, time.time(), replica, body_text)
            error = ""
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:  # the 200 went out first (a held stream); the failure comes as an event
                    error = json.dumps(chunk["error"])[:300]
                    break
                if first is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    first = time.time()
            return Answer(599 if error else 200, sent, first, time.time(), replica, error)
    except (httpx.HTTPError, httpx.StreamError, json.JSONDecodeError) as err:
        return Answer(0, sent, first, time.time(), "", f"{type(err).__name__}: {err}")


async def burst(release: Release, model: str, n: int, prompt: str, max_tokens: int = 8) -> list[Answer]:
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900, connect=30), limits=limits) as client:
        return list(await asyncio.gather(*(one_stream(client, release, model, prompt, max_tokens) for _ in range(n))))
