"""The real node's pure parts: addressing, config files, firewall rules, the pause image, DNS packets."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from hack import node, node_config

STATE = Path("/work/x/.cluster/node")
PKI = Path("/work/x/.cluster/pki")


@pytest.mark.parametrize("slot", [0, 3, 9])
def test_plan_derives_disjoint_names_and_ranges(slot: int) -> None:
    plan, other = node.Plan(slot), node.Plan((slot + 1) % 10)
    assert plan.netns != other.netns and plan.host_if != other.host_if
    assert plan.service_cidr != other.service_cidr and plan.pod_cidr != other.pod_cidr
    assert plan.kubernetes_service_ip.startswith(plan.service_cidr.rsplit(".", 1)[0])
    assert len(plan.host_if) <= 15 and len(plan.node_if) <= 15  # IFNAMSIZ


def test_slot_zero_keeps_the_classic_service_range() -> None:
    assert node.Plan(0).service_cidr == "10.96.0.0/20"
    assert node.Plan(0).kubernetes_service_ip == "10.96.0.1"


def test_containerd_config_settings_this_vm_needs_and_no_registry() -> None:
    config = tomllib.loads(node.containerd_config(STATE, node.Plan(2)))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True  # root lacks CAP_SYS_RESOURCE here
    assert cri["sandbox_image"] == node.PAUSE_IMAGE
    assert cri["registry"]["mirrors"]["*"]["endpoint"] == ["https://127.0.0.1:1"]  # pulls fail at once
    assert config["grpc"]["address"] == str(node.containerd_socket(STATE))
    assert config["root"].endswith("slot-2/root") and config["state"].startswith(str(STATE))


def test_kubelet_config_authenticates_by_client_certificate_only() -> None:
    config = node.kubelet_config(STATE, node.Plan(1), PKI)
    auth = config["authentication"]
    assert isinstance(auth, dict)
    assert auth["anonymous"] == {"enabled": False}
    assert auth["x509"] == {"clientCAFile": str(PKI / "ca.crt")}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["readOnlyPort"] == 0
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == "/sdc-node-1"
    assert config["clusterDNS"] == ["10.200.1.1"]


def test_kube_proxy_masquerades_nothing_from_outside_and_leaves_host_sysctls() -> None:
    config = node.kube_proxy_config(STATE / "kp.kubeconfig", node.Plan(0))
    assert config["mode"] == "iptables"
    assert "clusterCIDR" not in config
    assert config["conntrack"] == {
        "maxPerCore": 0,
        "min": 0,
        "tcpEstablishedTimeout": "0s",
        "tcpCloseWaitTimeout": "0s",
    }


def test_cluster_dns_has_no_upstream() -> None:
    corefile = node.corefile(node.Plan(0), STATE / "coredns.kubeconfig")
    assert "forward" not in corefile and "proxy" not in corefile
    assert "bind 10.200.0.1" in corefile


def test_cni_bridge_does_not_masquerade() -> None:
    bridge = node.cni_config(STATE, node.Plan(4))["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.200.4.0/24", "gateway": "10.200.4.1"}]]


def test_apiserver_flags_for_a_real_node() -> None:
    flags = node.apiserver_flags(node.Plan(1), PKI)
    assert "--advertise-address=10.199.1.1" in flags
    assert "--kubelet-preferred-address-types=InternalIP,Hostname" in flags
    assert f"--kubelet-certificate-authority={PKI / 'ca.crt'}" in flags
    assert "--service-cluster-ip-range=10.96.16.0/20" in flags


def test_host_rules_close_the_api_port_outside_and_forward_nothing() -> None:
    rules = node.host_rules(node.Plan(1), 6443, ["eth0"])
    flat = [" ".join(r) for r in rules]
    assert any(r.startswith("INPUT -i eth0 -p tcp --dport 6443") and r.endswith("-j DROP") for r in flat)
    assert any(r.startswith("FORWARD -i sdch1") for r in flat)
    assert any(r.startswith("FORWARD -o eth0") for r in flat)
    assert all("--comment sdc-node-1" in r for r in flat)


def test_rules_to_delete_matches_exactly_our_tag() -> None:
    saved = "\n".join(
        [
            "-P INPUT ACCEPT",
            "-A INPUT -i eth0 -p tcp -m tcp --dport 6443 -m comment --comment sdc-node-1 -j DROP",
            "-A FORWARD -i sdch10 -m comment --comment sdc-node-10 -j DROP",
            '-A FORWARD -o eth0 -m comment --comment "sdc-node-1" -j DROP',
            "-A FORWARD -j ACCEPT",
        ]
    )
    assert node.rules_to_delete(saved, "sdc-node-1") == [
        [
            "INPUT",
            "-i",
            "eth0",
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            "6443",
            "-m",
            "comment",
            "--comment",
            "sdc-node-1",
            "-j",
            "DROP",
        ],
        ["FORWARD", "-o", "eth0", "-m", "comment", "--comment", "sdc-node-1", "-j", "DROP"],
    ]


def test_pause_archive_is_a_valid_deterministic_oci_layout() -> None:
    archive = node.oci_archive(b"\x7fELF-pause", node.PAUSE_IMAGE)
    assert archive == node.oci_archive(b"\x7fELF-pause", node.PAUSE_IMAGE)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == node.PAUSE_IMAGE
    manifest = files[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"]
    assert hashlib.sha256(manifest).hexdigest() == entry["digest"].removeprefix("sha256:")
    layer_digest = json.loads(manifest)["layers"][0]["digest"].removeprefix("sha256:")
    import gzip

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(files[f"blobs/sha256/{layer_digest}"]))) as layer:
        member = layer.getmember("pause")
        assert member.mode == 0o755
        assert layer.extractfile(member).read() == b"\x7fELF-pause"


def test_dns_reply_parsing() -> None:
    query = node.dns_query("kubernetes.default.svc.cluster.local")
    # A reply: same header with QR set, one answer pointing back at the question name.
    reply = bytearray(query)
    reply[2:4] = b"\x81\x80"
    reply[6:8] = b"\x00\x01"
    reply += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x60\x00\x01"
    assert node.dns_answers(bytes(reply)) == ["10.96.0.1"]
    nxdomain = bytearray(reply)
    nxdomain[3] = 0x83
    assert node.dns_answers(bytes(nxdomain)) == []
    assert node.dns_answers(b"") == []


def test_command_lines_point_at_the_state_dir() -> None:
    argv = node.command_lines(STATE, node.Plan(0), Path("/bin-dir"))
    assert argv["kubelet"][0] == "/bin-dir/kubelet"
    assert f"--node-ip={node.Plan(0).node_ip}" in argv["kubelet"]
    assert argv["coredns"] == ["/bin-dir/coredns", "-conf", str(STATE / "Corefile")]


def test_simulated_cpu_node_is_tainted_only_beside_a_real_node() -> None:
    from hack import cluster

    cpu = next(n for n in cluster.NODES if not n["gpus"])
    gpu = next(n for n in cluster.NODES if n["gpus"])
    assert "taints" not in cluster.node_manifest(cpu)["spec"]  # type: ignore[operator]
    tainted = cluster.node_manifest(cpu, simulated_taint=True)["spec"]
    assert tainted == {"taints": [cluster.SIMULATED_TAINT]}
    gpu_taints = cluster.node_manifest(gpu, simulated_taint=True)["spec"]["taints"]
    assert [t["key"] for t in gpu_taints] == ["nvidia.com/gpu"]  # GPU nodes keep only the GPU taint


def test_apiserver_command_line_with_and_without_a_real_node() -> None:
    from hack import cluster

    ports = dict.fromkeys(("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"), 1)
    alone = cluster.command_lines(ports)["kube-apiserver"]
    assert "--bind-address=127.0.0.1" in alone and f"--service-cluster-ip-range={cluster.SERVICE_CIDR}" in alone
    beside = cluster.command_lines(ports, node.Plan(2))["kube-apiserver"]
    assert "--bind-address=0.0.0.0" in beside and "--advertise-address=10.199.2.1" in beside
    assert not any(flag.startswith("--bind-address=127") for flag in beside)


def test_kube_router_runs_its_firewall_controller_only_as_the_real_node() -> None:
    plan = node.Plan(3)
    argv = node.command_lines(STATE, plan, Path("/bin-dir"))["kube-router"]
    assert argv[0] == "/bin-dir/kube-router"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])
    assert flags["run-firewall"] == "true"
    assert flags["run-router"] == flags["run-service-proxy"] == flags["run-loadbalancer"] == "false"
    assert flags["hostname-override"] == node.NODE_NAME  # the node object whose addresses it reads
    assert flags["kubeconfig"] == str(STATE / "kube-router.kubeconfig")
    assert flags["service-cluster-ip-range"] == plan.service_cidr
    # No listener pods could reach on the node's addresses, no CNI file written beside ours.
    assert flags["health-port"] == flags["metrics-port"] == "0"
    assert flags["enable-pprof"] == flags["enable-cni"] == "false"
    assert node.ENFORCER in node.NODE_COMPONENTS and node.ENFORCER not in node.DAEMONS


def test_kube_router_identity_can_only_read() -> None:
    subject, extensions = node.node_certificates(node.Plan(0))["kube-router"]
    assert subject == "/CN=system:sdc-kube-router" and extensions == ["extendedKeyUsage=clientAuth"]
    role, binding = node.KUBE_ROUTER_RBAC
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"pods", "namespaces", "networkpolicies", "nodes"} <= resources
    assert binding["subjects"][0]["name"] == "system:sdc-kube-router"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert all(obj in node.NODE_RBAC for obj in (*node.COREDNS_RBAC, *node.KUBE_ROUTER_RBAC))


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("-P FORWARD ACCEPT\n-A FORWARD -m comment --comment kube-proxy -j KUBE-FORWARD\n", False),
        (
            '-P FORWARD ACCEPT\n-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" '
            "-j KUBE-ROUTER-FORWARD\n",
            True,
        ),
        ("-N KUBE-ROUTER-FORWARD\n-A INPUT -j KUBE-ROUTER-FORWARD\n", False),  # a chain, not FORWARD's jump
        ("", False),
    ],
)
def test_enforcing_reads_forwards_jump_to_the_enforcer(rules: str, expected: bool) -> None:
    assert node.enforcing(rules) is expected


@pytest.mark.parametrize("slot", [0, 9])
def test_node_links_cidr_holds_each_slots_host_address(slot: int) -> None:
    import ipaddress

    links = ipaddress.ip_network(node.NODE_LINKS_CIDR)
    plan = node.Plan(slot)
    assert ipaddress.ip_address(plan.host_ip) in links and ipaddress.ip_address(plan.node_ip) in links
    assert not ipaddress.ip_network(plan.pod_cidr).overlaps(links)


def test_a_just_spawned_process_shows_its_own_command_line() -> None:
    """Read at once after Popen, /proc/<pid>/cmdline is usually still empty (259 of 300 here): pid checks
    made right after a start took a live API server for a dead one and tore the cluster down."""
    for _ in range(50):
        proc = subprocess.Popen(["/bin/sleep", "30"], start_new_session=True)
        try:
            cmdline = node.read_cmdline(proc.pid)
        finally:
            proc.kill()
            proc.wait()
        assert cmdline[0].endswith(b"sleep"), cmdline


@pytest.mark.parametrize("slot", [0, 5, 9])
def test_config_files_name_every_file_the_daemons_read_and_only_the_slots_addresses(slot: int) -> None:
    plan = node.Plan(slot)
    files = node_config.config_files(STATE, plan, PKI, 6443)
    names = sorted(str(path.relative_to(STATE)) for path in files)
    assert names == [
        "Corefile",
        "cni/net.d/10-sdc.conflist",
        "containerd.toml",
        "coredns.kubeconfig",
        "kube-proxy.json",
        "kube-proxy.kubeconfig",
        "kube-router.kubeconfig",
        "kubelet.json",
        "kubelet.kubeconfig",
        "resolv.conf",
    ]
    # Every path the command lines name under the state directory is a file written here (or a directory).
    argv = node.command_lines(STATE, plan, Path("/bin-dir"))
    named = {a.split("=", 1)[-1] for args in argv.values() for a in args if a.split("=", 1)[-1].startswith(str(STATE))}
    assert named - {str(p) for p in files} == {str(STATE / "kubelet")}  # --root-dir, made by the kubelet
    kubeconfig = json.loads(files[STATE / "kubelet.kubeconfig"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{plan.host_ip}:6443"
    assert kubeconfig["users"][0]["user"]["client-certificate"] == str(PKI / "node.crt")
    assert files[STATE / "resolv.conf"] == f"nameserver {plan.bridge_ip}\n"
    others = {node.Plan(s).node_ip for s in range(10) if s != slot}
    assert not any(ip in text for text in files.values() for ip in others), "no other slot's address"


def test_node_names_are_re_exported_from_the_pure_module() -> None:
    """cluster.py, images.py, demo.py and the tests read the configuration through hack.node: one object each."""
    for name in ("Plan", "containerd_config", "command_lines", "NODE_LINKS_CIDR", "oci_archive", "config_files"):
        assert getattr(node, name) is getattr(node_config, name)


def test_node_config_is_pure() -> None:
    """No process, host or environment access in the configuration module: only what builds text and data."""
    import ast

    tree = ast.parse(Path(node_config.__file__).read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {str(n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "gzip", "hashlib", "io", "itertools", "json", "tarfile", "dataclasses",
                        "pathlib", "hack.common"}, imported  # fmt: skip


def test_write_configs_writes_config_files_as_they_are(tmp_path: Path) -> None:
    """node.write_configs (run by `up` before any daemon starts) writes exactly what config_files says."""
    plan = node.Plan(7)
    node.write_configs(tmp_path, plan, PKI, 6443)
    files = node_config.config_files(tmp_path, plan, PKI, 6443)
    assert all(path.read_text() == text for path, text in files.items())
    assert (tmp_path / "pod-logs").is_dir()


def test_node_certificates_are_issued_by_the_cluster_ca(tmp_path: Path) -> None:
    """node.certificates, as `cluster.py up` calls it for a real node: every stem, each chaining to the CA."""
    from hack import common

    common.issue_ca(tmp_path, "/CN=test-ca")
    node.certificates(tmp_path, node.Plan(3))
    for stem, (subject, _) in node.node_certificates(node.Plan(3)).items():
        crt = str(tmp_path / f"{stem}.crt")
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), crt], capture_output=True)
        assert verify.returncode == 0, (stem, verify.stderr)
        shown = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-subject", "-nameopt", "compat"],
                               capture_output=True, text=True).stdout  # fmt: skip
        assert shown.strip() == f"subject={subject}", stem
    kubelet = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "kubelet.crt"), "-noout", "-text"],
                             capture_output=True, text=True).stdout  # fmt: skip
    assert "IP Address:10.199.3.2" in kubelet


def test_node_wait_names_what_and_quotes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"
    log.write_text("".join(f"line {i}\n" for i in range(20)))
    with pytest.raises(node.NodeError, match=r"waiting for containerd\nline 12\n(.|\n)*line 19$"):
        node.wait("containerd", lambda: False, 0.1, log)


def test_a_failed_image_import_is_a_node_error(tmp_path: Path) -> None:
    with pytest.raises(node.NodeError, match="ctr images import"):
        node.import_image(tmp_path, 2**22 + 12345, tmp_path / "pause.oci.tar")  # no such holder process


def test_only_stores_no_cluster_holds_and_nothing_mounts_are_idle() -> None:
    # (slot, claimed by a running cluster's netns, something mounted under it)
    stores = [(0, True, True), (1, False, False), (2, True, False), (3, False, True), (4, False, False)]
    assert node_config.idle_stores(stores) == [1, 4]
    assert node_config.idle_stores([]) == []


@pytest.mark.parametrize(
    ("recorded", "owner_slot", "busy", "age_s", "stale"),
    [
        (True, "2", False, 5.0, False),  # its cluster's state still names the slot: it comes back to it
        (True, None, False, 5.0, True),  # the state directory is gone (a clone deleted without cluster-down)
        (True, "0", False, 5.0, True),  # that cluster now runs on another slot
        (True, None, True, 900.0, False),  # something still runs in the namespace
        (False, None, False, 5.0, False),  # just created by a cluster that has not recorded its claim yet
        (False, None, False, 120.0, True),  # never recorded, long ago (before claims were recorded)
    ],
)
def test_a_claim_is_stale_only_when_its_cluster_is_gone(
    recorded: bool, owner_slot: str | None, busy: bool, age_s: float, stale: bool
) -> None:
    assert node_config.stale_claim(2, recorded, owner_slot, busy, age_s) is stale


def test_teardown_leaves_a_slot_another_cluster_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file that outlived a reboot names a slot another cluster has claimed since: teardown must not
    kill that cluster's node or delete its namespace; only the stale state file goes."""
    monkeypatch.setattr(node, "CACHE", tmp_path / "cache")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    (ours / "slot").write_text("7")
    node.record_claim(node.Plan(7), theirs)
    assert node.teardown(ours) == [f"nothing: slot 7 is held by {theirs.resolve()}"]
    assert not (ours / "slot").exists()
    assert node.claim_owner(node.Plan(7)) == theirs.resolve(), "the holder's claim record stays"
