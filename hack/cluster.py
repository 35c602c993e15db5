#!/usr/bin/env python3
"""Start and stop the local Kubernetes control plane the tests run against.

A real control plane, not a mock: etcd, kube-apiserver, kube-controller-manager
(Deployments -> ReplicaSets -> Pods, garbage collection, PV binding and the
built-in hostPath provisioner behind a default StorageClass), kube-scheduler
(real placement, extended resources like ``nvidia.com/gpu``) and KWOK, which
plays every kubelet so pods on simulated nodes become Running without
containers. Everything listens on loopback on free ports; certificates,
state, logs and pid files live under ``.cluster/``.

``up`` is idempotent (a healthy cluster is left alone) and ``down`` stops only
the processes whose pid files it wrote, after checking that each pid still
runs one of our binaries. Standard library plus ``openssl`` only: this runs
before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `hack` importable
    sys.path.insert(0, str(ROOT))

from hack import common  # noqa: E402
from hack import node as real_node  # noqa: E402
from hack.common import BIN, KUBECONFIG, STATE  # noqa: E402

PKI = STATE / "pki"
LOGS = STATE / "logs"
PIDS = STATE / "pids"
NODE_STATE = STATE / "node"
SERVICE_CIDR = "10.96.0.0/16"  # without a real node; with one, its slot's range (hack/node.py)
# Taint of the simulated CPU node while a real node runs: CPU workloads go to the real node unless
# they opt into simulation (tests that want pods "Running" without containers tolerate it).
SIMULATED_TAINT = {"key": "sdc.dev/simulated", "value": "true", "effect": "NoSchedule"}
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# Simulated nodes: a CPU-only node and two GPU nodes labelled and tainted the
# way the NVIDIA GPU operator and the cloud providers do it.
NODES = [
    {"name": "cpu-node-0", "cpu": "16", "memory": "64Gi", "gpus": 0, "product": None},
    {"name": "gpu-node-1x", "cpu": "16", "memory": "128Gi", "gpus": 1, "product": "NVIDIA-L4"},
    {"name": "gpu-node-8x", "cpu": "96", "memory": "1024Gi", "gpus": 8, "product": "NVIDIA-H100-80GB-HBM3"},
]


class ClusterError(common.HackError):
    """A failure with a one-line explanation for the user."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openssl(*args: str) -> None:
    common.openssl(*args, error=ClusterError)


# What the API server's serving certificate names, besides a real node's addresses.
APISERVER_SANS = [
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
]


def issue_apiserver(extra_sans: list[str]) -> None:
    sans = ",".join([*APISERVER_SANS, *extra_sans])
    common.issue(
        PKI,
        "apiserver",
        "/CN=kube-apiserver",
        [f"subjectAltName={sans}", "extendedKeyUsage=serverAuth"],
        error=ClusterError,
    )


def make_pki(extra_sans: list[str] | None = None) -> None:
    """A CA, a serving certificate, an admin client certificate and SA keys.

    The serving certificate is reissued when the addresses it must name change (a real node's slot).
    """
    sans_file = PKI / "apiserver.sans"
    wanted = ",".join(extra_sans or [])
    if (PKI / "admin.crt").exists():
        if (sans_file.read_text() if sans_file.exists() else "") != wanted:
            issue_apiserver(extra_sans or [])
            sans_file.write_text(wanted)
        return
    PKI.mkdir(parents=True, exist_ok=True)
    common.issue_ca(PKI, "/CN=sdc-test-cluster-ca", error=ClusterError)
    issue_apiserver(extra_sans or [])
    common.issue(PKI, "admin", "/O=system:masters/CN=sdc-admin", ["extendedKeyUsage=clientAuth"], error=ClusterError)
    sans_file.write_text(wanted)
    openssl("genrsa", "-out", str(PKI / "sa.key"), "2048")
    openssl("rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub"))


def write_kubeconfig(api_port: int) -> None:
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((PKI / name).read_bytes()).decode()

    config = common.kubeconfig(
        "sdc-local",
        {"server": f"https://127.0.0.1:{api_port}", "certificate-authority-data": b64("ca.crt")},
        "sdc-admin",
        {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
        "sdc-local",
    )
    KUBECONFIG.write_text(json.dumps(config, indent=2))
    KUBECONFIG.chmod(0o600)


def command_lines(ports: dict[str, int], plan: real_node.Plan | None = None) -> dict[str, list[str]]:
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    kubeconfig = str(KUBECONFIG)
    return {
        "etcd": [
            str(BIN / "etcd"),
            "--name=sdc",
            f"--data-dir={STATE / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=sdc={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={PKI / 'apiserver.crt'}",
            f"--tls-private-key-file={PKI / 'apiserver.key'}",
            f"--client-ca-file={PKI / 'ca.crt'}",
            f"--service-account-key-file={PKI / 'sa.pub'}",
            f"--service-account-signing-key-file={PKI / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            *audit_flags(),
            *(
                real_node.apiserver_flags(plan, PKI)
                if plan
                else [
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                ]
            ),
        ],
        "kube-controller-manager": [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={PKI / 'sa.key'}",
            f"--root-ca-file={PKI / 'ca.crt'}",
            "--enable-hostpath-provisioner=true",
            "--controllers=*",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=20",
            "--concurrent-replicaset-syncs=20",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(BIN / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kwok": [
            str(BIN / "kwok"),
            f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=",
            "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
            "--disregard-status-with-label-selector=",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ],
    }


def audit_flags() -> list[str]:
    """With SDC_CLUSTER_AUDIT=1, every request is logged (JSON, metadata only): benchmarks count API calls."""
    if os.environ.get("SDC_CLUSTER_AUDIT") != "1":
        return []
    policy = STATE / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
    )
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={LOGS / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=2000",
        "--audit-log-mode=batch",
    ]


def pid_of(component: str) -> int | None:
    """The pid we started for ``component``, if it still runs our binary."""
    pid_file = PIDS / f"{component}.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text())
        cmdline = common.read_cmdline(pid)
    except (ValueError, OSError):
        return None
    if not cmdline or not cmdline[0].endswith(component.encode()):
        return None
    if not any(str(STATE).encode() in arg for arg in cmdline):
        return None
    return pid


def start(component: str, argv: list[str]) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{component}.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=STATE
        )
    (PIDS / f"{component}.pid").write_text(str(proc.pid))


def api_ready(port: int) -> bool:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], bool], timeout: float, component: str | None = None) -> None:
    def exited() -> str | None:
        if component and pid_of(component) is None:
            tail = common.log_tail(LOGS / f"{component}.log", 5)
            return f"{component} exited while waiting for {what}:\n" + "\n".join(tail)
        return None

    common.wait_for(what, check, timeout, exited=exited, hint=lambda: f"; see {LOGS}", error=ClusterError)


def kubectl(*args: str, stdin: str | None = None) -> str:
    return common.kubectl(KUBECONFIG, *args, stdin=stdin, error=ClusterError)


def serviceaccount_kubeconfig(cluster: dict[str, object], token: str) -> dict[str, object]:
    """A kubeconfig that authenticates with a ServiceAccount token against `cluster` (a kubeconfig
    `clusters[].cluster` entry): to run a process with exactly the RBAC a chart grants."""
    return common.kubeconfig("cluster", cluster, "sa", {"token": token}, "sa")


def node_manifest(node: dict[str, object], simulated_taint: bool = False) -> dict[str, object]:
    """A KWOK-managed Node: name, cpu, memory, gpus (0 = CPU only), product, and optionally pods.

    With `simulated_taint`, a CPU node carries SIMULATED_TAINT (a real node takes the CPU workloads).
    """
    gpus = int(str(node["gpus"]))
    labels = {
        "kubernetes.io/hostname": node["name"],
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "node.kubernetes.io/instance-type": "kwok",
    }
    capacity: dict[str, str] = {
        "cpu": str(node["cpu"]),
        "memory": str(node["memory"]),
        "pods": str(node.get("pods", "110")),
        "ephemeral-storage": "500Gi",
    }
    taints: list[dict[str, str]] = []
    if gpus:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": str(node["product"]),
            }
        )
        capacity["nvidia.com/gpu"] = str(gpus)
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    elif simulated_taint:
        taints.append(dict(SIMULATED_TAINT))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node["name"],
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


def running_ports() -> dict[str, int] | None:
    ports_file = STATE / "ports.json"
    if not ports_file.exists():
        return None
    ports: dict[str, int] = json.loads(ports_file.read_text())
    if not (all(pid_of(c) for c in COMPONENTS) and api_ready(ports["apiserver"])):
        return None
    if (NODE_STATE / "slot").exists() and not real_node.alive(NODE_STATE):
        return None
    return ports


def real_node_wanted() -> bool:
    return os.environ.get("SDC_REAL_NODE", "1") != "0"


def up() -> None:
    missing = [c for c in (*COMPONENTS, "kubectl") if not (BIN / c).exists()]
    if missing:
        raise ClusterError(f"missing {', '.join(missing)} in bin/: run `make tools` first")
    started = time.monotonic()
    if running_ports():
        print(f"cluster already up: export KUBECONFIG={KUBECONFIG}")
        return
    down(quiet=True)
    STATE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(STATE / "etcd", ignore_errors=True)
    plan = None
    if real_node_wanted():
        real_node.preflight(BIN)
        plan = real_node.claim_slot(NODE_STATE)
    make_pki(real_node.apiserver_sans(plan) if plan else None)
    if plan:
        real_node.certificates(PKI, plan)
    ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok")}
    (STATE / "ports.json").write_text(json.dumps(ports))
    write_kubeconfig(ports["apiserver"])
    if plan:
        print(f"==> real node {real_node.NODE_NAME}: netns {plan.netns}, pods {plan.pod_cidr}", flush=True)
        real_node.setup_network(plan, ports["apiserver"])  # the firewall rule before the API server binds
    argv = command_lines(ports, plan)
    print("==> starting etcd and kube-apiserver", flush=True)
    start("etcd", argv["etcd"])
    start("kube-apiserver", argv["kube-apiserver"])
    wait_for("the API server to be ready", lambda: api_ready(ports["apiserver"]), 90, "kube-apiserver")
    print("==> starting kube-controller-manager, kube-scheduler and kwok", flush=True)
    for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
        start(component, argv[component])
    docs: list[Any] = [node_manifest(n, simulated_taint=plan is not None) for n in NODES]
    docs += [STORAGE_CLASS, *(real_node.NODE_RBAC if plan else [])]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    if plan:
        print("==> starting containerd, kubelet, kube-proxy and CoreDNS on the real node", flush=True)
        real_node.up(NODE_STATE, plan, PKI, ports["apiserver"], BIN, BIN / "pause")
    print("==> waiting for nodes to be Ready", flush=True)
    want = len(NODES) + (1 if plan else 0)

    def nodes_ready() -> bool:
        out = kubectl(
            "get", "nodes", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}{end}"
        )
        if plan and not real_node.alive(NODE_STATE, real_node.DAEMONS):
            raise ClusterError(f"a real node daemon exited; see {NODE_STATE / 'logs'}")
        return out.split() == ["True"] * want

    wait_for("nodes to be Ready", nodes_ready, 120, "kwok")
    if plan:
        print("==> starting kube-router (the NetworkPolicy enforcer) on the real node", flush=True)
        real_node.start_enforcer(NODE_STATE, plan, BIN)

    def default_sa() -> bool:
        try:
            kubectl("get", "serviceaccount", "default", "-n", "default")
        except ClusterError:
            return False
        return True

    wait_for("the default ServiceAccount", default_sa, 60, "kube-controller-manager")
    if plan:
        wait_for("cluster DNS", lambda: real_node.dns_ready(plan), 30)
    print(f"cluster up in {time.monotonic() - started:.1f}s")
    print(
        kubectl(
            "get",
            "nodes",
            "-o",
            "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status,"
            "CPU:.status.capacity.cpu,GPU:.status.capacity.nvidia\\.com/gpu,IP:.status.addresses[0].address",
        )
    )
    print(f"export KUBECONFIG={KUBECONFIG}")


def add_nodes(kubeconfig: Path) -> None:
    """The same simulated GPU and CPU nodes on another cluster whose KWOK controller manages them (kind in CI)."""
    docs = [node_manifest(n) for n in NODES]
    applied = common.kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        error=ClusterError,
    )
    print(applied.strip())


def down(quiet: bool = False) -> None:
    stopped = []
    for component in reversed(COMPONENTS):
        pid = pid_of(component)
        if pid is not None:
            common.send_signal(pid, signal.SIGTERM, group=True)
            stopped.append((component, pid))
        (PIDS / f"{component}.pid").unlink(missing_ok=True)
    deadline = time.monotonic() + 15
    for _component, pid in stopped:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            # reap if it is our child (it is not, across invocations) and check zombie state
            status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
            if status == "Z":
                break
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            common.send_signal(pid, signal.SIGKILL, group=True)
    (STATE / "ports.json").unlink(missing_ok=True)
    try:
        if real_node.teardown(NODE_STATE):
            stopped.append(("real node", 0))
    except real_node.NodeError as err:
        raise ClusterError(str(err)) from err
    if not quiet:
        names = ", ".join(c for c, _ in stopped) or "nothing was running"
        print(f"cluster down ({names})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["up", "down", "status", "nodes"])
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="with `nodes`: add the simulated nodes to this cluster (e.g. kind running KWOK)",
    )
    args = parser.parse_args()
    try:
        if args.action == "up":
            try:
                up()
            except (ClusterError, real_node.NodeError, OSError, subprocess.SubprocessError) as err:
                down(quiet=True)  # leave nothing half-started behind
                raise ClusterError(str(err)) from err
        elif args.action == "down":
            down()
        elif args.action == "nodes":
            add_nodes(args.kubeconfig or KUBECONFIG)
        else:
            ports = running_ports()
            print(f"up: KUBECONFIG={KUBECONFIG}" if ports else "down")
            return 0 if ports else 1
    except ClusterError as err:
        print(f"cluster {args.action}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
