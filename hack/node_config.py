"""The real node's configuration: pure functions of the slot, the state directory and the PKI directory.

Names and addresses (Plan), containerd's, the kubelet's, kube-proxy's, CoreDNS's and the CNI's config
text, the daemons' command lines, the API server's flags for a node, the host's firewall rules, the
node's certificates' subjects, the pause image archive and DNS packets. Nothing here runs a process or
touches the host: hack/node.py does that with what these return. Table-tested in tests/unit/test_node.py.
Standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from hack.common import CACHE, kubeconfig

NODE_NAME = "sdc-real-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
SLOTS = range(10)
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


def stale_claim(slot: int, recorded: bool, owner_slot: str | None, busy: bool, age_s: float) -> bool:
    """Whether a slot's claim (its network namespace) outlived the cluster that made it.

    Anything running in it keeps it. Otherwise it is stale when the claim names a cluster whose state no
    longer says this slot (deleted, or brought down and up elsewhere), or when no claim was ever recorded
    and the namespace is over a minute old (a cluster records its claim right after creating it).
    """
    if busy:
        return False
    if recorded:
        return owner_slot != str(slot)
    return age_s > 60


def idle_stores(stores: list[tuple[int, bool, bool]]) -> list[int]:
    """The slots whose image stores may be deleted to make room: (slot, claimed, mounted) each.

    A claimed slot (its network namespace exists) belongs to a running cluster; a store with a mount
    under it is still in use by something (rm -r would reach into the mounted tree): both are kept.
    """
    return [slot for slot, claimed, mounted in stores if not claimed and not mounted]


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
    """A node component's kubeconfig: the cluster CA and the client certificate `pki/<user>.crt` (context `sdc`,
    which the Corefile names)."""
    cluster = {"server": server, "certificate-authority": str(pki / "ca.crt")}
    credentials = {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}
    return kubeconfig("sdc", cluster, user, credentials, "sdc")


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


def config_files(state: Path, plan: Plan, pki: Path, api_port: int) -> dict[Path, str]:
    """Every file the node's daemons read, path -> text (hack/node.py writes them before starting any)."""
    server = f"https://{plan.host_ip}:{api_port}"
    files = {
        state / "containerd.toml": containerd_config(state, plan),
        state / "cni" / "net.d" / "10-sdc.conflist": json.dumps(cni_config(state, plan), indent=2),
        state / "kubelet.json": json.dumps(kubelet_config(state, plan, pki), indent=2),
        state / "kube-proxy.json": json.dumps(kube_proxy_config(state / "kube-proxy.kubeconfig", plan), indent=2),
        state / "Corefile": corefile(plan, state / "coredns.kubeconfig"),
        state / "resolv.conf": f"nameserver {plan.bridge_ip}\n",
    }
    users = (("kubelet", "node"), ("kube-proxy", "kube-proxy"), ("coredns", "coredns"), ("kube-router", "kube-router"))
    for user, stem in users:
        files[state / f"{user}.kubeconfig"] = json.dumps(component_kubeconfig(server, pki, stem), indent=2)
    return files


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
