"""One real node beside the KWOK nodes: containerd, kubelet, kube-proxy, CoreDNS and kube-router.

kube-router runs its firewall controller only (no routing, no service
proxy): it is the node's NetworkPolicy enforcer, so the chart's policies drop
real packets here (the bridge CNI alone enforces nothing).

Why a network namespace and a private mount namespace: a node changes the
host in many ways (a bridge, iptables chains, sysctls, mounts for pod volumes
and netns files, cgroups). Everything that can be namespaced is: the node,
its bridge, kube-proxy's chains, its sysctls and its pods live in the network
namespace ``sdc-node-<slot>``, joined to the host by one veth pair; containerd,
kubelet and the shims share one private mount namespace whose tmpfs
``/run``, ``/var/lib`` and ``/var/log`` take the files they insist on writing
there. ``down`` kills the node's cgroup tree and deletes the namespace, and
every mount, route, pod address and chain goes with it. What remains on the
host is small and tagged: three iptables rules carrying the comment
``sdc-node-<slot>`` and the cgroup directories ``/sdc-node-<slot>``; both are
removed by ``down``.

No traffic leaves the machine: pods reach only the node namespace and the
host's end of the veth (where the API server listens); the host forwards
nothing that comes from the node (a FORWARD drop rule, and ip_forward stays
off), nothing is masqueraded out, CoreDNS has no upstream, and containerd's
registry mirror is a closed local port so an accidental pull fails at once.

Each cluster takes a free slot (0-9): clusters of different worktrees get
different namespaces, addresses, service ranges and cgroup roots.

The pure parts (addressing plan, config files, command lines, firewall rules,
the pause image archive) are functions of their arguments, tested in
tests/unit/test_node.py. Standard library plus openssl and the host tools.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from hack.tools import APT_PACKAGES  # the packages `make tools` installs: one list

CACHE = Path(os.environ.get("SDC_TOOLS_CACHE", Path.home() / ".cache" / "sdc-llm"))
NODE_NAME = "sdc-real-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
SLOTS = range(10)
CGROUP_FS = Path("/sys/fs/cgroup")
CNI_BIN_DIR = "/usr/lib/cni"
# Every slot's veth pair (Plan.host_ip, Plan.node_ip). Traffic the host sends to a pod comes from here,
# from outside the node as far as NetworkPolicy goes: a policy that admits it says so with an ipBlock.
NODE_LINKS_CIDR = "10.199.0.0/16"
# The daemons `up` starts; the enforcer starts once the kubelet has registered the node (it reads
# the node's addresses at start and exits when there is no node object yet).
DAEMONS = ("containerd", "kubelet", "kube-proxy", "coredns")
ENFORCER = "kube-router"
NODE_COMPONENTS = (*DAEMONS, ENFORCER)
# kube-router's top-level chain in the filter table: FORWARD jumps to it once policies are enforced.
ENFORCER_CHAIN = "KUBE-ROUTER-FORWARD"
PV_PERMISSIONS = "while :; do chmod 0777 /tmp/hostpath_pv/*/ 2>/dev/null; sleep 0.3; done"


class NodeError(Exception):
    """A failure with a one-line explanation for the user."""


@dataclass(frozen=True)
class Plan:
    """Names and addresses of one real node, all derived from its slot."""

    slot: int

    @property
    def tag(self) -> str:
        return f"sdc-node-{self.slot}"

    @property
    def netns(self) -> str:
        return self.tag

    @property
    def host_if(self) -> str:
        return f"sdch{self.slot}"

    @property
    def node_if(self) -> str:
        return f"sdcn{self.slot}"

    @property
    def host_ip(self) -> str:
        """The host's end of the veth: the API server's advertise address."""
        return f"10.199.{self.slot}.1"

    @property
    def node_ip(self) -> str:
        return f"10.199.{self.slot}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.200.{self.slot}.0/24"

    @property
    def bridge_ip(self) -> str:
        """The pods' gateway, where CoreDNS listens."""
        return f"10.200.{self.slot}.1"

    @property
    def service_cidr(self) -> str:
        return f"10.96.{16 * self.slot}.0/20"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.96.{16 * self.slot}.1"

    @property
    def cgroup_root(self) -> str:
        return f"/{self.tag}"


# ---------------------------------------------------------------- pure parts


def containerd_config(state: Path, plan: Plan) -> str:
    """containerd 1.6 config (version 2) for the node.

    restrict_oom_score_adj: root in this VM lacks CAP_SYS_RESOURCE, so runc
    fails every sandbox that asks for a lower OOM score. The "*" mirror points
    every registry at a closed local port: pulls fail at once, nothing leaves.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{image_store(plan) / "root"}"
state = "{state / "containerd" / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{containerd_socket(state)}"

[ttrpc]
  address = "{containerd_socket(state)}.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{state / "cni" / "net.d"}"

[{cri}.registry.mirrors."*"]
  endpoint = ["https://127.0.0.1:1"]
"""


def image_store(plan: Plan) -> Path:
    """containerd's content and snapshots, kept in the tool cache per slot: images loaded once survive
    `cluster-down` and fresh clones (two clusters never share a slot at the same time)."""
    return CACHE / "node" / f"slot-{plan.slot}"


def containerd_socket(state: Path) -> Path:
    return state / "containerd" / "containerd.sock"


def cni_config(state: Path, plan: Plan) -> dict[str, object]:
    """A bridge with host-local addresses; no masquerade (ipMasq false): pods talk only inside."""
    return {
        "cniVersion": "0.4.0",
        "name": "sdc",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": plan.pod_cidr, "gateway": plan.bridge_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(state / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(state: Path, plan: Plan, pki: Path) -> dict[str, object]:
    """KubeletConfiguration: client-certificate authentication only, webhook authorization.

    failCgroupV1: this host runs cgroup v1. cgroupRoot keeps the node's pods
    under /sdc-node-<slot> so ``down`` finds and removes every one. Image
    garbage collection is off (100 %): the images were built here and cannot
    be pulled back.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": plan.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "containerRuntimeEndpoint": f"unix://{containerd_socket(state)}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": plan.cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [plan.bridge_ip],
        "clusterDomain": "cluster.local",
        "resolvConf": str(state / "resolv.conf"),
        "podLogsDir": str(state / "pod-logs"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "100Mi", "imagefs.available": "100Mi"},
        "evictionPressureTransitionPeriod": "30s",
        "serializeImagePulls": False,
        "maxPods": 60,
        "staticPodPath": "",
        "nodeStatusReportFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(kubeconfig: Path, plan: Plan) -> dict[str, object]:
    """kube-proxy in iptables mode inside the node namespace.

    No clusterCIDR: traffic from outside the pod range (the host reaching a
    ClusterIP) is not masqueraded. conntrack limits and timeouts are left as
    they are (0): kube-proxy would otherwise write host-wide sysctls.
    """
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": plan.node_ip,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        "nodePortAddresses": [f"{plan.node_ip}/32"],
    }


def corefile(plan: Plan, kubeconfig: Path) -> str:
    """Cluster DNS only: no `forward`, so no name is ever resolved outside the machine."""
    return f""".:53 {{
    bind {plan.bridge_ip}
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} sdc
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""


COREDNS_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "sdc:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sdc:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sdc:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:sdc-coredns"}],
    },
]


# What kube-router's firewall controller reads: its informers cover these, and it looks up its own node.
KUBE_ROUTER_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "sdc:kube-router"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sdc:kube-router"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sdc:kube-router"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:sdc-kube-router"}],
    },
]
NODE_RBAC = [*COREDNS_RBAC, *KUBE_ROUTER_RBAC]


def component_kubeconfig(server: str, pki: Path, user: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sdc",
        "clusters": [{"name": "sdc", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")},
            }
        ],
        "contexts": [{"name": "sdc", "context": {"cluster": "sdc", "user": user}}],
    }


# Client certificates: file stem -> (subject, extensions).
def node_certificates(plan: Plan) -> dict[str, tuple[str, list[str]]]:
    return {
        "kubelet": (
            f"/CN={NODE_NAME}",
            [f"subjectAltName=IP:{plan.node_ip},DNS:{NODE_NAME}", "extendedKeyUsage=serverAuth"],
        ),
        "node": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", ["extendedKeyUsage=clientAuth"]),
        "kube-proxy": ("/CN=system:kube-proxy", ["extendedKeyUsage=clientAuth"]),
        "coredns": ("/CN=system:sdc-coredns", ["extendedKeyUsage=clientAuth"]),
        "kube-router": ("/CN=system:sdc-kube-router", ["extendedKeyUsage=clientAuth"]),
        # The API server's identity towards the kubelet (exec, logs, port-forward).
        "apiserver-kubelet-client": (
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            ["extendedKeyUsage=clientAuth"],
        ),
    }


def apiserver_flags(plan: Plan, pki: Path) -> list[str]:
    """What the API server needs for a real node: an address the node's namespace can reach.

    It binds every address, advertises the host's end of the veth (so the
    `kubernetes` Service gets an endpoint pods can use) and a firewall rule
    drops its port on the external interface. Kubelets are reached by
    InternalIP, never by resolving node names through the machine's resolver.
    """
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={plan.host_ip}",
        f"--service-cluster-ip-range={plan.service_cidr}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
    ]


def apiserver_sans(plan: Plan) -> list[str]:
    return [f"IP:{plan.host_ip}", f"IP:{plan.kubernetes_service_ip}"]


def host_rules(plan: Plan, api_port: int, external: list[str]) -> list[list[str]]:
    """iptables rules on the host (``-I`` form), each tagged with the slot's comment.

    The API server's port is closed on the external interfaces; nothing the
    node sends is forwarded by the host; nothing at all is forwarded out of
    the external interfaces.
    """
    tag = ["-m", "comment", "--comment", plan.tag]
    rules = [["INPUT", "-i", ext, "-p", "tcp", "--dport", str(api_port), *tag, "-j", "DROP"] for ext in external]
    rules.append(["FORWARD", "-i", plan.host_if, *tag, "-j", "DROP"])
    rules += [["FORWARD", "-o", ext, *tag, "-j", "DROP"] for ext in external]
    return rules


def rules_to_delete(saved: str, tag: str) -> list[list[str]]:
    """From `iptables -S` output, the `-D` arguments of every rule carrying exactly our comment."""
    out = []
    for line in saved.splitlines():
        parts = [part.strip('"') for part in line.split()]
        if parts[:1] == ["-A"] and any(a == "--comment" and b == tag for a, b in itertools.pairwise(parts)):
            out.append(parts[1:])
    return out


def command_lines(state: Path, plan: Plan, bin_dir: Path) -> dict[str, list[str]]:
    return {
        "containerd": ["/usr/bin/containerd", f"--config={state / 'containerd.toml'}"],
        "kubelet": [
            str(bin_dir / "kubelet"),
            f"--config={state / 'kubelet.json'}",
            f"--kubeconfig={state / 'kubelet.kubeconfig'}",
            f"--root-dir={state / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={plan.node_ip}",
            "--node-labels=type=real,sdc.dev/real-node=true",
            "--v=1",
        ],
        "kube-proxy": [str(bin_dir / "kube-proxy"), f"--config={state / 'kube-proxy.json'}", "--v=1"],
        "coredns": [str(bin_dir / "coredns"), "-conf", str(state / "Corefile")],
        # The firewall controller alone: kube-proxy serves Services and the bridge CNI routes pods.
        # No health, metrics or pprof listener (pods could reach one on the node's addresses).
        "kube-router": [
            str(bin_dir / "kube-router"),
            f"--kubeconfig={state / 'kube-router.kubeconfig'}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-cni=false",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            f"--service-cluster-ip-range={plan.service_cidr}",
            "--health-port=0",
            "--metrics-port=0",
            "--enable-pprof=false",
            "--v=1",
        ],
    }


def enforcing(iptables_rules: str) -> bool:
    """Whether the filter table (`iptables -S`) sends forwarded packets through the enforcer's chain."""
    return any(
        line.split()[:2] == ["-A", "FORWARD"] and line.split()[-2:] == ["-j", ENFORCER_CHAIN]
        for line in iptables_rules.splitlines()
    )


def oci_archive(binary: bytes, reference: str, entrypoint: str = "/pause") -> bytes:
    """An OCI image archive (what `ctr images import` reads) with one file: a static binary.

    Deterministic: fixed mtimes and owners, so the same binary gives the same digest.
    """

    def tar_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, (data, mode) in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    layer_tar = tar_bytes({entrypoint.lstrip("/"): (binary, 0o755)})
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [entrypoint], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
        },
        sort_keys=True,
    ).encode()

    def desc(media: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data)}

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)],
        },
        sort_keys=True,
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **desc("application/vnd.oci.image.manifest.v1+json", manifest),
                "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference},
            }
        ],
    }
    blobs = {f"blobs/sha256/{hashlib.sha256(b).hexdigest()}": (b, 0o644) for b in (layer_gz, config, manifest)}
    return tar_bytes(
        {
            "oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', 0o644),
            "index.json": (json.dumps(index, sort_keys=True).encode(), 0o644),
            **blobs,
        }
    )


# Host-wide sysctls the kubelet sets at start (setupKernelTunables). They are not namespaced, so
# `up` saves them before the first node starts and `down` of the last node puts them back.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
SAVED_SYSCTLS = Path("/run/sdc-llm/sysctls.json")


# ---------------------------------------------------------------- host I/O


def save_sysctls() -> None:
    """Record the host's values unless another node already did (it saw them untouched)."""
    if SAVED_SYSCTLS.exists():
        return
    SAVED_SYSCTLS.parent.mkdir(parents=True, exist_ok=True)
    values = {key: Path("/proc/sys", key).read_text().strip() for key in KUBELET_SYSCTLS}
    SAVED_SYSCTLS.write_text(json.dumps(values))


def restore_sysctls(plan: Plan) -> None:
    """Put the saved values back once no other real node runs on this machine."""
    others = [p for p in Path("/run/netns").glob("sdc-node-*") if p.name != plan.netns]
    if others or not SAVED_SYSCTLS.exists():
        return
    for key, value in json.loads(SAVED_SYSCTLS.read_text()).items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError:
            pass
    SAVED_SYSCTLS.unlink()
    try:
        SAVED_SYSCTLS.parent.rmdir()
    except OSError:
        pass


def run(*argv: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace').strip()}")
    return result


def in_netns(plan: Plan, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return run("ip", "netns", "exec", plan.netns, *argv, check=check)


def external_interfaces() -> list[str]:
    """Interfaces that carry a default route: the way off this machine."""
    out = run("ip", "-j", "route", "show", "default").stdout
    names = {str(route["dev"]) for route in json.loads(out or b"[]") if "dev" in route}
    return sorted(names) or ["eth0"]


def preflight(bin_dir: Path) -> None:
    if os.geteuid() != 0:
        raise NodeError("the real node needs root (network namespace, cgroups, iptables); SDC_REAL_NODE=0 skips it")
    missing = [pkg for pkg, path in APT_PACKAGES.items() if not Path(path).exists()]
    if missing:
        raise NodeError(f"missing packages {', '.join(missing)}: run `make tools`")
    for binary in ("kubelet", "kube-proxy", "coredns", "kube-router", "pause"):
        if not (bin_dir / binary).exists():
            raise NodeError(f"missing {binary} in bin/: run `make tools`")


def claim_slot(state: Path) -> Plan:
    """Reuse this cluster's slot, else take the first free one (creating its netns claims it atomically)."""
    saved = state / "slot"
    if saved.exists():
        plan = Plan(int(saved.read_text()))
        if Path(f"/run/netns/{plan.netns}").exists():
            return plan
        if run("ip", "netns", "add", plan.netns, check=False).returncode == 0:
            return plan
    for slot in SLOTS:
        plan = Plan(slot)
        if run("ip", "netns", "add", plan.netns, check=False).returncode == 0:
            state.mkdir(parents=True, exist_ok=True)
            saved.write_text(str(slot))
            return plan
    raise NodeError("no free node slot (10 clusters with real nodes on this machine?)")


def setup_network(plan: Plan, api_port: int) -> None:
    """veth pair, addresses, routes, the bridge, namespace sysctls, and the host's firewall rules."""
    run("ip", "link", "add", plan.host_if, "type", "veth", "peer", "name", plan.node_if, "netns", plan.netns)
    run("ip", "addr", "add", f"{plan.host_ip}/24", "dev", plan.host_if)
    run("ip", "link", "set", plan.host_if, "up")
    for cidr in (plan.pod_cidr, plan.service_cidr):
        run("ip", "route", "add", cidr, "via", plan.node_ip, "dev", plan.host_if)
    in_netns(plan, "ip", "link", "set", "lo", "up")
    in_netns(plan, "ip", "addr", "add", f"{plan.node_ip}/24", "dev", plan.node_if)
    in_netns(plan, "ip", "link", "set", plan.node_if, "up")
    # A default route to the host, which forwards nothing: off-machine addresses fail at once.
    in_netns(plan, "ip", "route", "add", "default", "via", plan.host_ip)
    in_netns(plan, "ip", "link", "add", "cni0", "type", "bridge")
    in_netns(plan, "ip", "addr", "add", f"{plan.bridge_ip}/24", "dev", "cni0")
    in_netns(plan, "ip", "link", "set", "cni0", "up")
    for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1", "net.ipv4.conf.all.route_localnet=1"):
        in_netns(plan, "sysctl", "-q", "-w", key)
    # Pod-to-pod packets cross the bridge without being routed: iptables (kube-proxy's DNAT, the
    # enforcer's policy chains) sees them only through br_netfilter, which this namespace must have on.
    bridged = in_netns(plan, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables", check=False).stdout.strip()
    if bridged != b"1":
        raise NodeError(f"net.bridge.bridge-nf-call-iptables is {bridged.decode() or 'missing'} in {plan.netns}")
    for rule in host_rules(plan, api_port, external_interfaces()):
        run("iptables", "-w", "-I", *rule)


def cgroup_hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


def make_cgroups(plan: Plan) -> Path:
    """The node's cgroup root in every hierarchy; returns the pids cgroup its daemons join."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / plan.tag
        root.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for name in ("cpuset.cpus", "cpuset.mems"):
                (root / name).write_text((hierarchy / name).read_text())
    daemons = CGROUP_FS / "pids" / plan.tag / "daemons"
    daemons.mkdir(exist_ok=True)
    return daemons


def cgroup_pids(plan: Plan) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / plan.tag
        if not root.exists():
            continue
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def start_holder(plan: Plan, state: Path, cgroup: Path) -> int:
    """A process that holds the node's private mount namespace (inside its network namespace)."""
    script = (
        f"echo $$ > {cgroup}/cgroup.procs && exec nsenter --net=/run/netns/{plan.netns} "
        "unshare --mount --propagation private sh -c '"
        "mount -t tmpfs -o mode=0755 sdc-run /run && mount -t tmpfs -o mode=0755 sdc-varlib /var/lib && "
        "mount -t tmpfs -o mode=0755 sdc-varlog /var/log && exec sleep infinity'"
    )
    proc = subprocess.Popen(
        ["sh", "-c", script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (state / "holder.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        except OSError:
            comm = ""
        if comm == "sleep":
            return proc.pid
        if proc.poll() is not None:
            raise NodeError("could not create the node's mount namespace")
        time.sleep(0.05)
    raise NodeError("the node's mount namespace did not come up")


def start_in_node(name: str, argv: list[str], holder: int, cgroup: Path, logs: Path, pids: Path) -> int:
    """Start a daemon in the node's namespaces and cgroup; the pid is that of the final binary (exec chain)."""
    script = f'echo $$ > {cgroup}/cgroup.procs && exec nsenter -t {holder} -m -n -- "$@"'
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            ["sh", "-c", script, name, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def import_image(state: Path, holder: int, archive: Path) -> None:
    """`ctr images import` into the node's containerd (k8s.io namespace, where the kubelet looks)."""
    run(
        "nsenter",
        "-t",
        str(holder),
        "-m",
        "-n",
        "--",
        "ctr",
        f"--address={containerd_socket(state)}",
        "-n",
        "k8s.io",
        "images",
        "import",
        str(archive),
    )


def teardown(state: Path) -> list[str]:
    """Kill the node's cgroup tree, delete its namespace, tagged firewall rules and cgroups. Idempotent."""
    saved = state / "slot"
    if not saved.exists():
        return []
    plan = Plan(int(saved.read_text()))
    done: list[str] = []
    deadline = time.monotonic() + 20
    while (pids := cgroup_pids(plan) - {os.getpid()}) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    if pids:
        raise NodeError(f"processes of {plan.tag} survived SIGKILL: {sorted(pids)}")
    done.append("node processes")
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / plan.tag
        if root.exists():
            for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                directory.rmdir()
            root.rmdir()
    if Path(f"/run/netns/{plan.netns}").exists():
        run("ip", "netns", "delete", plan.netns, check=False)
        done.append(f"netns {plan.netns}")
    run("ip", "link", "delete", plan.host_if, check=False)  # gone with the namespace; belt and braces
    restore_sysctls(plan)
    for table in ("filter",):
        saved_rules = run("iptables", "-w", "-t", table, "-S", check=False).stdout.decode()
        for rule in rules_to_delete(saved_rules, plan.tag):
            run("iptables", "-w", "-t", table, "-D", *rule, check=False)
    for name in (*NODE_COMPONENTS, "pv-permissions", "holder"):
        (state / "pids" / f"{name}.pid").unlink(missing_ok=True)
    (state / "holder.pid").unlink(missing_ok=True)
    saved.unlink()
    return done


def write_configs(state: Path, plan: Plan, pki: Path, api_port: int) -> None:
    server = f"https://{plan.host_ip}:{api_port}"
    (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (state / "pod-logs").mkdir(exist_ok=True)
    (state / "containerd.toml").write_text(containerd_config(state, plan))
    (state / "cni" / "net.d" / "10-sdc.conflist").write_text(json.dumps(cni_config(state, plan), indent=2))
    (state / "kubelet.json").write_text(json.dumps(kubelet_config(state, plan, pki), indent=2))
    (state / "kube-proxy.json").write_text(
        json.dumps(kube_proxy_config(state / "kube-proxy.kubeconfig", plan), indent=2)
    )
    (state / "Corefile").write_text(corefile(plan, state / "coredns.kubeconfig"))
    (state / "resolv.conf").write_text(f"nameserver {plan.bridge_ip}\n")
    users = (("kubelet", "node"), ("kube-proxy", "kube-proxy"), ("coredns", "coredns"), ("kube-router", "kube-router"))
    for user, stem in users:
        (state / f"{user}.kubeconfig").write_text(json.dumps(component_kubeconfig(server, pki, stem), indent=2))


def wait(what: str, check: object, timeout: float, log: Path | None = None) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:])
    raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def issue(pki: Path, stem: str, subject: str, extensions: list[str]) -> None:
    """A key and a certificate signed by the cluster CA (EC P-256, ten years: a throwaway test cluster)."""
    addext = [arg for ext in extensions for arg in ("-addext", ext)]
    key, csr, crt = (str(pki / f"{stem}.{suffix}") for suffix in ("key", "csr", "crt"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", subject, *addext)
    ca = ["-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial"]
    run("openssl", "x509", "-req", "-in", csr, *ca, "-days", "3650", "-copy_extensions", "copyall", "-out", crt)


def certificates(pki: Path, plan: Plan) -> None:
    """The node's certificates (the kubelet's serving one names the slot's address, so it is always reissued)."""
    for stem, (subject, extensions) in node_certificates(plan).items():
        if not (pki / f"{stem}.crt").exists() or stem == "kubelet":
            issue(pki, stem, subject, extensions)


def up(state: Path, plan: Plan, pki: Path, api_port: int, bin_dir: Path, pause: Path) -> None:
    """Start containerd, kubelet, kube-proxy and CoreDNS in the node's namespaces (network, certificates ready)."""
    logs, pids = state / "logs", state / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    write_configs(state, plan, pki, api_port)
    cgroup = make_cgroups(plan)
    holder = start_holder(plan, state, cgroup)
    argv = command_lines(state, plan, bin_dir)
    socket = containerd_socket(state)
    socket.unlink(missing_ok=True)  # a killed containerd leaves its socket: waiting on it would not wait
    start_in_node("containerd", argv["containerd"], holder, cgroup, logs, pids)
    wait("containerd", socket.exists, 30, logs / "containerd.log")
    archive = state / "pause.oci.tar"
    archive.write_bytes(oci_archive(pause.read_bytes(), PAUSE_IMAGE))
    import_image(state, holder, archive)
    save_sysctls()
    for name in ("kubelet", "kube-proxy", "coredns"):
        start_in_node(name, argv[name], holder, cgroup, logs, pids)
    # The built-in hostPath provisioner makes each volume root-owned 0750 and hostPath ignores
    # fsGroup, so non-root pods could not write their model cache; real storage honours fsGroup.
    # Opening the provisioned directories stands in for that (this is a local test cluster).
    start_in_node("pv-permissions", ["sh", "-c", PV_PERMISSIONS], holder, cgroup, logs, pids)


def start_enforcer(state: Path, plan: Plan, bin_dir: Path) -> None:
    """Start kube-router's firewall controller (the node must be registered) and wait for its chains."""
    holder = int((state / "holder.pid").read_text())
    cgroup = CGROUP_FS / "pids" / plan.tag / "daemons"
    argv = command_lines(state, plan, bin_dir)[ENFORCER]
    pid = start_in_node(ENFORCER, argv, holder, cgroup, state / "logs", state / "pids")

    def ready() -> bool:
        try:  # until it execs, the pid is the starting shell's: only a gone or zombie process has exited
            exited = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            exited = True
        if exited:
            raise NodeError(f"{ENFORCER} exited; see {state / 'logs' / (ENFORCER + '.log')}")
        return enforcing(in_netns(plan, "iptables", "-w", "-S", "FORWARD", check=False).stdout.decode())

    wait(f"{ENFORCER} to enforce NetworkPolicies", ready, 60, state / "logs" / f"{ENFORCER}.log")
    if not alive(state, (ENFORCER,)):
        raise NodeError(f"{ENFORCER} is not running; see {state / 'logs' / (ENFORCER + '.log')}")


def read_cmdline(pid: int) -> list[bytes]:
    """/proc/<pid>/cmdline, waiting out the moment just after a spawn when it is still empty.

    Popen returns once the child has released its parent's memory in execve, which is before the kernel
    has set up the new program's arguments: read at once, a just-started process shows an empty command
    line and would look like another program.
    """
    deadline = time.monotonic() + 2
    while True:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        if raw or time.monotonic() > deadline:
            return raw.split(b"\0")
        time.sleep(0.01)


def alive(state: Path, names: tuple[str, ...] = NODE_COMPONENTS) -> bool:
    """Every named node daemon still runs (by pid file and binary name); by default all of them."""
    for name in names:
        try:
            pid = int((state / "pids" / f"{name}.pid").read_text())
            cmdline = read_cmdline(pid)
        except (OSError, ValueError):
            return False
        if not cmdline[0].endswith(name.encode()):
            return False
    return True


def dns_query(name: str) -> bytes:
    """A DNS query packet for the A record of `name` (id 0x5dc, recursion desired)."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    return b"\x05\xdc\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"


def dns_answers(reply: bytes) -> list[str]:
    """IPv4 addresses in a DNS reply to `dns_query` (answers of type A, class IN)."""
    if len(reply) < 12 or reply[3] & 0x0F:
        return []
    count = int.from_bytes(reply[6:8], "big")
    pos = 12
    while reply[pos] != 0:  # skip the question's name (no compression in a question we built)
        pos += reply[pos] + 1
    pos += 5
    out = []
    for _ in range(count):
        if reply[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while reply[pos] != 0:
                pos += reply[pos] + 1
            pos += 1
        rtype, rclass = int.from_bytes(reply[pos : pos + 2], "big"), int.from_bytes(reply[pos + 2 : pos + 4], "big")
        length = int.from_bytes(reply[pos + 8 : pos + 10], "big")
        data = reply[pos + 10 : pos + 10 + length]
        if rtype == 1 and rclass == 1 and length == 4:
            out.append(".".join(str(b) for b in data))
        pos += 10 + length
    return out


def resolve(plan: Plan, name: str, timeout: float = 1.0) -> list[str]:
    """Ask the node's CoreDNS (reachable from the host through the veth)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(dns_query(name), (plan.bridge_ip, 53))
            return dns_answers(sock.recv(4096))
        except OSError:
            return []


def dns_ready(plan: Plan) -> bool:
    return resolve(plan, "kubernetes.default.svc.cluster.local") == [plan.kubernetes_service_ip]
