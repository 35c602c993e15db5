"""The operator at scale: N LocalLLMs created at once, on a cluster of its own.

Per size N (1, 100, 500): time from apply to each Deployment created and to
each LocalLLM Ready (p50, p99, last), and API requests the operator made per
object. At the largest N: the operator's resident memory, the writes it makes
while idle, and the child writes a restart over the converged objects makes
(the goal for both is none), and the cold start: N LocalLLMs applied while no
operator runs, then the operator started (its own pace, apart from the API
server's pace at admitting LocalLLMs). The physical limit is the cluster's own
pace: the same number of plain Deployments applied directly with kubectl (no
operator) in the same run, until created and until Available; beside it, the
three objects a LocalLLM makes, applied directly.

API requests are counted exactly from the API server's audit log (the operator's
two clients identify as kopf and sdc-operator), not estimated.
Run: `python benchmarks/operator_scale.py [--sizes 1,100,500] [--idle-seconds 300]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sdc_operator.builders.common import OWNER_LABEL, LocalLLM
from sdc_operator.builders.workload import desired_children
from sdc_operator.settings import OperatorSettings

from benchmarks.common import ROOT, machine, median, percentile, table, versions, write_report
from hack.cluster import node_manifest
from tests.support.servers import free_port

STATE = ROOT / ".cluster-bench"
KUBECONFIG = STATE / "kubeconfig"
AUDIT = STATE / "logs" / "audit.log"
OPERATOR_AGENTS = ("kopf/", "sdc-operator")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
ENV = {**os.environ, "SDC_CLUSTER_DIR": str(STATE), "SDC_CLUSTER_AUDIT": "1", "SDC_REAL_NODE": "0"}
CHILD_RESOURCES = {"deployments", "services", "persistentvolumeclaims"}


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(ROOT / "bin" / "kubectl"), f"--kubeconfig={KUBECONFIG}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def bench_nodes(count: int = 6) -> list[dict[str, Any]]:
    """Roomy CPU nodes so that hundreds of model pods fit (the default nodes take 110 pods each)."""
    return [
        node_manifest(
            {"name": f"bench-cpu-{i}", "cpu": "512", "memory": "2048Gi", "gpus": 0, "product": None, "pods": "250"}
        )
        for i in range(count)
    ]


def localllm(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "llm.sdc.dev/v1alpha1",
        "kind": "LocalLLM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runtime": "ollama", "model": {"name": "gemma2:9b"}, "cache": {"size": "1Gi"}},
    }


def plain_deployment(name: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "ollama/ollama"}]},
            },
        },
    }


def plain_trio(name: str, namespace: str) -> list[dict[str, Any]]:
    """What one LocalLLM makes, built by the operator's own builders from the same spec (the Deployment with
    its download step and claim mount, the Service, the cache claim) and written directly: no owner
    reference (no LocalLLM exists to own them), and the owner label renamed (the running operator watches
    that label: it must see none of these; the selectors keep working on the renamed one)."""
    body = localllm(name, namespace)
    body["metadata"] |= {"uid": f"bench-{name}", "generation": 1}
    objects = desired_children(LocalLLM.from_body(body), OperatorSettings(metrics_port=0))
    for obj in objects:
        obj["metadata"].pop("ownerReferences", None)
    return [_relabel(obj, OWNER_LABEL, "bench.sdc.dev/model") for obj in objects]


def _relabel(value: Any, old: str, new: str) -> Any:
    """`value` with the key `old` renamed to `new` in every mapping in it (labels, selectors, templates)."""
    if isinstance(value, dict):
        return {(new if k == old else k): _relabel(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relabel(v, old, new) for v in value]
    return value


class Watcher:
    """Timestamps of first sightings, from `kubectl get -w` streams (JSON lines)."""

    def __init__(self, namespace: str, resource: str, done: Any) -> None:
        self.seen: dict[str, float] = {}
        self.argv = [
            str(ROOT / "bin" / "kubectl"),
            f"--kubeconfig={KUBECONFIG}",
            "get",
            resource,
            "-n",
            namespace,
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ]
        self.stopped = False
        self.restarts = 0
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        self.done = done
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        # The API server ends a watch after a while (and a loaded one sooner): watch again. The relist
        # dates what it shows to the restart, so a restart can only make a figure worse, never better.
        while True:
            self._read()
            self.proc.wait()
            if self.stopped:
                return
            self.restarts += 1
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)

    def _read(self) -> None:
        # `kubectl get -w -o json` prints pretty-printed JSON objects back to back: decode them
        # one at a time from a growing buffer (braces inside strings make brace counting unsafe).
        if self.proc.stdout is None:
            return
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self.proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object is still arriving
                buffer = buffer.lstrip()[end:]
                obj = event.get("object", {})
                name = obj.get("metadata", {}).get("name")
                if name and name not in self.seen and self.done(obj):
                    self.seen[name] = time.monotonic()

    def stop(self) -> None:
        self.stopped = True
        self.proc.terminate()


def audit_events(offset: int) -> Iterator[dict[str, Any]]:
    """The API server's audit events written after `offset` (a line cut short mid-write is skipped)."""
    with AUDIT.open() as fh:
        fh.seek(offset)
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def audit_requests(offset: int) -> list[dict[str, Any]]:
    return [e for e in audit_events(offset) if str(e.get("userAgent", "")).startswith(OPERATOR_AGENTS)]


def _stamp(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(str(event["stageTimestamp"]).replace("Z", "+00:00")).timestamp()


def creation_lags(offset: int, namespace: str) -> tuple[list[float], float]:
    """From the audit log: per LocalLLM, seconds from its creation (by kubectl) to its Deployment's
    (by the operator), and how long kubectl took to create all the LocalLLMs. The first is the
    operator's own delay; the second is the pace at which the cluster admitted its input."""
    made: dict[str, float] = {}
    deployed: dict[str, float] = {}
    for event in audit_events(offset):
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace or (event.get("responseStatus") or {}).get("code") not in (200, 201):
            continue
        if ref.get("resource") == "localllms" and event.get("verb") == "create":
            made.setdefault(str(ref.get("name")), _stamp(event))
        elif ref.get("resource") == "deployments" and event.get("verb") in ("create", "patch"):
            deployed.setdefault(str(ref.get("name")), _stamp(event))
    lags = [deployed[n] - t for n, t in made.items() if n in deployed]
    return lags, (max(made.values()) - min(made.values())) if made else float("nan")


def wait_all(seen: dict[str, float], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    if len(seen) < n:
        raise RuntimeError(f"only {len(seen)}/{n} done after {timeout:.0f}s")


COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cluster_pids() -> dict[str, int]:
    return {c: int((STATE / "pids" / f"{c}.pid").read_text()) for c in COMPONENTS}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(
    namespace: str, n: int, ready: Watcher, pids: dict[str, int], start: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    """Run `start` and time it: seconds from then to each Deployment created in `namespace` and to each
    object `ready` reports, the CPU seconds of `pids` and of the processes `start` launched (whose pids it
    returns) until all were ready, and the audit-log offset from which its requests are counted."""
    deployments = Watcher(namespace, "deployments", lambda o: True)
    time.sleep(1.0)  # the watches are established
    offset = AUDIT.stat().st_size
    cpu_before = {c: cpu_seconds(pid) for c, pid in pids.items()}
    started = time.monotonic()
    launched = start()
    wait_all(deployments.seen, n, 600)
    wait_all(ready.seen, n, 900)
    time.sleep(2)  # let trailing status writes land in the audit log
    cpu = {c: cpu_seconds(pid) - cpu_before[c] for c, pid in pids.items()}
    cpu |= {c: cpu_seconds(pid) for c, pid in launched.items()}
    deployments.stop()
    ready.stop()
    return {
        "cpu": cpu,
        "offset": offset,
        "created": [t - started for t in deployments.seen.values()],
        "ready": [t - started for t in ready.seen.values()],
    }


def operator_requests(offset: int) -> dict[str, int]:
    requests = audit_requests(offset)
    return {"requests": len(requests), "writes": sum(1 for r in requests if r.get("verb") in WRITE_VERBS)}


def localllms_ready(namespace: str) -> Watcher:
    return Watcher(namespace, "localllms", lambda o: o.get("status", {}).get("phase") == "Ready")


def apply_list(items: list[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def run_size(n: int, mode: str, operator_pid: int) -> dict[str, Any]:
    """`mode`: "operator" (N LocalLLMs), "deployments" (N plain Deployments) or "trio" (N times the three
    objects a LocalLLM makes, applied directly: what the operator costs beyond the objects themselves)."""
    with_operator = mode == "operator"
    namespace = f"bench-{mode}-{n}"
    kubectl("create", "namespace", namespace)
    ready = (
        localllms_ready(namespace)
        if with_operator
        else Watcher(namespace, "deployments", lambda o: o.get("status", {}).get("availableReplicas") == 1)
    )
    objects: list[dict[str, Any]] = []
    for i in range(n):
        if mode == "trio":
            objects += plain_trio(f"m{i}", namespace)
        else:
            objects.append(localllm(f"m{i}", namespace) if with_operator else plain_deployment(f"m{i}", namespace))

    def apply() -> dict[str, int]:
        apply_list(objects)
        return {}

    pids = {**cluster_pids(), "operator": operator_pid}
    run = timed(namespace, n, ready, pids, apply) | {"n": n, "namespace": namespace}
    counts = operator_requests(run["offset"]) if with_operator else {"requests": 0, "writes": 0}
    lags, admitted = creation_lags(run["offset"], namespace) if with_operator else ([], float("nan"))
    return run | counts | {"lags": lags, "admitted": admitted}


def cold_start(
    n: int, start_operator: Callable[[], subprocess.Popen[bytes]]
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """The operator's own pace, apart from the pace at which the API server admits LocalLLMs: N LocalLLMs
    applied while no operator runs, then the operator started. Times are from its start (its imports and
    login included) to each Deployment created and each LocalLLM Ready. Returns the figures and the
    running operator."""
    namespace = f"bench-cold-{n}"
    kubectl("create", "namespace", namespace)
    apply_list([localllm(f"m{i}", namespace) for i in range(n)])
    operators: list[subprocess.Popen[bytes]] = []

    def start() -> dict[str, int]:
        operators.append(start_operator())
        return {"operator": operators[0].pid}

    run = timed(namespace, n, localllms_ready(namespace), cluster_pids(), start)
    return run | operator_requests(run["offset"]), operators[0]


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,500")
    parser.add_argument("--idle-seconds", type=float, default=300)
    parser.add_argument("--restart-seconds", type=float, default=60, help="how long to watch a restarted operator")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "cluster.py"), "down"], env=ENV, check=False, capture_output=True
    )
    subprocess.run([sys.executable, str(ROOT / "hack" / "cluster.py"), "up"], env=ENV, check=True, capture_output=True)
    operator: subprocess.Popen[bytes] | None = None
    try:
        apply_list(bench_nodes())
        kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "localllm.yaml"))
        kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
        kubectl("create", "namespace", "sdc")
        log = open(STATE / "logs" / "operator.log", "ab")  # noqa: SIM115

        def start_operator() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "sdc_operator"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "KUBECONFIG": str(KUBECONFIG),
                    "SDC_STANDALONE": "true",
                    "SDC_METRICS_PORT": str(free_port()),
                    "SDC_HEALTH_PORT": str(free_port()),
                    "SDC_LOG_FORMAT": "plain",
                    "SDC_ENDPOINTS_NAMESPACE": "sdc",
                },
            )

        operator = start_operator()
        time.sleep(5)
        rows, limit_rows = [], []
        cpu_rows: list[list[Any]] = []
        idle_writes = idle_requests = restart_child_writes = restart_writes = 0
        memory = float("nan")
        cold_row: list[Any] = []
        for n in sizes:
            limit = run_size(n, "deployments", operator.pid)
            trio = run_size(n, "trio", operator.pid)
            result = run_size(n, "operator", operator.pid)
            print(
                f"N={n}: all Deployments after {max(result['created']):.1f}s (plain: {max(limit['created']):.1f}s, "
                f"the three objects directly: {max(trio['created']):.1f}s), all Ready after "
                f"{max(result['ready']):.1f}s (plain Available: {max(limit['ready']):.1f}s, "
                f"three objects: {max(trio['ready']):.1f}s)",
                flush=True,
            )
            rows.append(
                [
                    n,
                    median(result["created"]),
                    percentile(result["created"], 99),
                    max(result["created"]),
                    max(limit["created"]),
                    max(result["created"]) / max(limit["created"]),
                    max(trio["created"]),
                    max(result["created"]) / max(trio["created"]),
                    result["admitted"],
                    f"{median(result['lags']):.2f} / {max(result['lags'], default=float('nan')):.2f}",
                    median(result["ready"]),
                    max(result["ready"]),
                    max(limit["ready"]),
                    max(trio["ready"]),
                    result["requests"] / n,
                    result["writes"] / n,
                ]
            )
            limit_rows.append(limit)
            for label, run in (("plain Deployments", limit), ("three objects direct", trio), ("LocalLLMs", result)):
                cpu_rows.append([f"{label} (N={n})", *(run["cpu"][c] for c in (*COMPONENTS, "operator"))])
            if n == max(sizes):
                memory = rss_mib(operator.pid)
                offset = AUDIT.stat().st_size
                print(f"idle for {args.idle_seconds:.0f}s with {n} LocalLLMs present ...", flush=True)
                time.sleep(args.idle_seconds)
                idle = audit_requests(offset)
                idle_requests = len(idle)
                idle_writes = sum(1 for r in idle if r.get("verb") in WRITE_VERBS)
                # A restart over converged objects: the new process must find nothing to write on any child.
                operator.terminate()
                operator.wait(timeout=30)
                offset = AUDIT.stat().st_size
                operator = start_operator()
                print(f"restarted; watching it for {args.restart_seconds:.0f}s ...", flush=True)
                time.sleep(args.restart_seconds)
                restarted = [r for r in audit_requests(offset) if r.get("verb") in WRITE_VERBS]
                restart_writes = len(restarted)
                restart_child_writes = sum(
                    1 for r in restarted if (r.get("objectRef") or {}).get("resource") in CHILD_RESOURCES
                )
                # The cold start runs alone: the converged objects go first (the operator sees them go).
                kubectl("delete", "namespace", result["namespace"], "--wait=true", "--timeout=900s")
                operator.terminate()
                operator.wait(timeout=30)
                print(f"cold start: {n} LocalLLMs applied with no operator running, then the operator ...", flush=True)
                cold, operator = cold_start(n, start_operator)
                cold_row = [
                    n,
                    max(cold["created"]),
                    max(limit["created"]),
                    max(cold["created"]) / max(limit["created"]),
                    max(trio["created"]),
                    max(cold["created"]) / max(trio["created"]),
                    max(cold["ready"]),
                    cold["requests"] / n,
                    cold["writes"] / n,
                ]
                cpu_rows.append(
                    [f"operator started over {n} LocalLLMs", *(cold["cpu"][c] for c in (*COMPONENTS, "operator"))]
                )
                print(
                    f"cold start: all Deployments {max(cold['created']):.1f}s after the operator's start, "
                    f"all Ready {max(cold['ready']):.1f}s",
                    flush=True,
                )
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        subprocess.run(
            [sys.executable, str(ROOT / "hack" / "cluster.py"), "down"], env=ENV, check=False, capture_output=True
        )
    text = "\n".join(
        [
            "## Operator at scale",
            "",
            f"Machine: {machine()}. {versions('kopf', 'kubernetes')}; Kubernetes v1.35.4 (local control plane, KWOK).",
            "N LocalLLMs (ollama, CPU) applied at once in one `kubectl apply`; times are from the apply. The limit: the "
            "same number of plain Deployments applied directly in the same run (no operator), until created and until "
            "Available. A LocalLLM makes three objects (Deployment, Service, cache claim) where the limit makes one; "
            '"three objects direct" applies those three per model with kubectl, built by the operator\'s own builders '
            "from the same spec (the Deployment with its download step and claim mount, the Service, the claim; no "
            "owner reference, owner label renamed), with no operator and no LocalLLM involved. "
            "Operator lag: per LocalLLM, from its creation to its Deployment's (audit log): the operator's own delay, "
            "apart from the pace at which the API server admits the LocalLLMs themselves.",
            f"Command: `python benchmarks/operator_scale.py --sizes {args.sizes} --idle-seconds {args.idle_seconds:.0f} "
            f"--restart-seconds {args.restart_seconds:.0f}`",
            "",
            table(
                [
                    "N",
                    "Deployment created p50 (s)",
                    "p99 (s)",
                    "all created (s)",
                    "limit: all created (s)",
                    "ratio",
                    "three objects direct: all created (s)",
                    "ratio to three objects",
                    "kubectl: all LocalLLMs created (s)",
                    "operator lag p50 / max (s)",
                    "Ready p50 (s)",
                    "all Ready (s)",
                    "limit: all Available (s)",
                    "three objects: all Available (s)",
                    "API requests / object",
                    "writes / object",
                ],
                rows,
            ),
            "",
            "The operator's own pace, apart from the API server's pace at admitting LocalLLMs: N LocalLLMs applied "
            "while no operator runs, then the operator started; times from its start (imports and login included), "
            "beside the limits above (same run):",
            "",
            table(
                [
                    "N",
                    "all Deployments created (s)",
                    "limit: plain Deployments all created (s)",
                    "ratio",
                    "three objects direct: all created (s)",
                    "ratio to three objects",
                    "all Ready (s)",
                    "API requests / object",
                    "writes / object",
                ],
                [cold_row] if cold_row else [],
            ),
            "",
            "CPU seconds each process used from the apply (for the cold start: from the operator's start) until all "
            "were Ready (2 cores: the wall time above is at least the sum over 2):",
            "",
            table(["run", *COMPONENTS, "operator"], cpu_rows),
            "",
            f"Operator resident memory with {max(sizes)} LocalLLMs: {memory:.0f} MiB.",
            f"Idle for {args.idle_seconds:.0f} s with {max(sizes)} LocalLLMs present: {idle_writes} writes, "
            f"{idle_requests} requests in all (watch renewals included).",
            f"Restart over {max(sizes)} converged LocalLLMs, {args.restart_seconds:.0f} s watched: "
            f"{restart_child_writes} child writes ({restart_writes} writes in all).",
            "",
        ]
    )
    print(text)
    write_report("operator", text)
    return text


if __name__ == "__main__":
    main()
