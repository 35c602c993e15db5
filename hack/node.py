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

This module is the node's process management and host I/O: namespaces,
cgroups, firewall rules applied, daemons started and stopped. What it writes
and runs (addressing plan, config files, command lines, firewall rules, the
pause image archive) comes from hack/node_config.py, pure functions of their
arguments tested in tests/unit/test_node.py; its names are re-exported here.
Standard library plus openssl and the host tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hack import common
from hack.common import CACHE, HackError, read_cmdline
from hack.node_config import (
    COREDNS_RBAC,
    DAEMONS,
    ENFORCER,
    ENFORCER_CHAIN,
    KUBE_ROUTER_RBAC,
    KUBELET_SYSCTLS,
    NODE_COMPONENTS,
    NODE_LINKS_CIDR,
    NODE_NAME,
    NODE_RBAC,
    PAUSE_IMAGE,
    PV_PERMISSIONS,
    SLOTS,
    Plan,
    apiserver_flags,
    apiserver_sans,
    cni_config,
    command_lines,
    component_kubeconfig,
    config_files,
    containerd_config,
    containerd_socket,
    corefile,
    dns_answers,
    dns_query,
    enforcing,
    host_rules,
    idle_stores,
    image_store,
    kube_proxy_config,
    kubelet_config,
    node_certificates,
    oci_archive,
    rules_to_delete,
    stale_claim,
)
from hack.tools import APT_PACKAGES  # the packages `make tools` installs: one list

# Re-exported: cluster.py, images.py, demo.py and the tests read the node's configuration through this module.
__all__ = [
    "COREDNS_RBAC",
    "DAEMONS",
    "ENFORCER",
    "ENFORCER_CHAIN",
    "KUBELET_SYSCTLS",
    "KUBE_ROUTER_RBAC",
    "NODE_COMPONENTS",
    "NODE_LINKS_CIDR",
    "NODE_NAME",
    "NODE_RBAC",
    "PAUSE_IMAGE",
    "PV_PERMISSIONS",
    "SLOTS",
    "NodeError",
    "Plan",
    "alive",
    "apiserver_flags",
    "apiserver_sans",
    "certificates",
    "claim_slot",
    "cni_config",
    "command_lines",
    "component_kubeconfig",
    "config_files",
    "containerd_config",
    "containerd_socket",
    "corefile",
    "dns_answers",
    "dns_query",
    "dns_ready",
    "enforcing",
    "host_rules",
    "idle_stores",
    "image_store",
    "issue",
    "kube_proxy_config",
    "kubelet_config",
    "node_certificates",
    "oci_archive",
    "preflight",
    "read_cmdline",
    "reclaim_idle_stores",
    "rules_to_delete",
    "setup_network",
    "start_enforcer",
    "teardown",
    "up",
]

CGROUP_FS = Path("/sys/fs/cgroup")
SAVED_SYSCTLS = Path("/run/sdc-llm/sysctls.json")


class NodeError(HackError):
    """A failure with a one-line explanation for the user."""


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
    """Reuse this cluster's slot, else take the first free one (creating its netns claims it atomically).

    A claim whose cluster is gone (its state directory deleted or given another slot, nothing running in
    the namespace: a clone removed without `cluster-down`) is released first, so a new cluster takes the
    lowest slot and finds the images that slot's store already holds. All of it runs under one lock per
    machine: two clusters starting at once never both release the same stale slot and both take it.
    """
    saved = state / "slot"
    with claims_lock():
        if saved.exists():
            plan = Plan(int(saved.read_text()))
            if Path(f"/run/netns/{plan.netns}").exists() and claim_owner(plan) not in (None, state.resolve()):
                saved.unlink()  # another cluster holds that slot now (this state outlived a reboot): not ours
            elif (
                Path(f"/run/netns/{plan.netns}").exists()
                or run("ip", "netns", "add", plan.netns, check=False).returncode == 0
            ):
                record_claim(plan, state)
                return plan
        for slot in SLOTS:
            plan = Plan(slot)
            if claim_is_stale(plan):
                print(f"==> releasing node slot {slot}: the cluster that claimed it is gone", flush=True)
                release_stale_claim(plan)
            if run("ip", "netns", "add", plan.netns, check=False).returncode == 0:
                state.mkdir(parents=True, exist_ok=True)
                saved.write_text(str(slot))
                record_claim(plan, state)
                return plan
    raise NodeError("no free node slot (10 clusters with real nodes on this machine?)")


@contextlib.contextmanager
def claims_lock() -> Iterator[None]:
    """One process at a time claims, releases or reclaims slots on this machine."""
    lock_path = CACHE / "node" / "claims" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim_file(plan: Plan) -> Path:
    return CACHE / "node" / "claims" / f"slot-{plan.slot}"


def record_claim(plan: Plan, state: Path) -> None:
    claim_file(plan).parent.mkdir(parents=True, exist_ok=True)
    claim_file(plan).write_text(str(state.resolve()))


def claim_owner(plan: Plan) -> Path | None:
    """The state directory recorded as holding the slot (None: no record)."""
    try:
        return Path(claim_file(plan).read_text().strip())
    except OSError:
        return None


def claim_is_stale(plan: Plan) -> bool:
    netns = Path(f"/run/netns/{plan.netns}")
    if not netns.exists():
        return False
    owner = claim_owner(plan)
    owner_slot = None
    if owner is not None:
        try:
            owner_slot = (owner / "slot").read_text().strip()
        except OSError:
            owner_slot = None
    busy = bool(run("ip", "netns", "pids", plan.netns, check=False).stdout.strip()) or bool(cgroup_pids(plan))
    return stale_claim(plan.slot, owner is not None, owner_slot, busy, time.time() - netns.stat().st_mtime)


def release_stale_claim(plan: Plan) -> None:
    """What `teardown` undoes for a live cluster (namespace, link, rules, cgroups), for a dead one's slot
    (called under `claims_lock`)."""
    orphan = CACHE / "node" / "claims" / f"orphan-{plan.slot}-{os.getpid()}"
    orphan.mkdir(parents=True, exist_ok=True)
    (orphan / "slot").write_text(str(plan.slot))
    claim_file(plan).unlink(missing_ok=True)  # the orphan's teardown must not see the dead owner's record
    try:
        teardown(orphan, locked=True)
    finally:
        shutil.rmtree(orphan, ignore_errors=True)


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
    common.import_image(holder, containerd_socket(state), archive, str(archive), error=NodeError)


def reclaim_idle_stores() -> list[str]:
    """Delete the image stores of slots no running cluster holds; returns what was removed, with sizes.

    Each slot keeps its own containerd content and snapshots (~26 GB with the engine images): a second
    cluster on another slot (a CI clone beside a developer's cluster) loads everything again, and a slot
    left behind keeps its copy for ever. Called when a load would not fit (hack/images.py). Under
    `claims_lock` (no cluster claims a slot meanwhile) each idle store is renamed out of the slot's name
    first, so a cluster that claims the slot later starts on an empty store, never on a half-deleted one.
    """
    root = CACHE / "node"
    removed: list[str] = []
    doomed: list[Path] = []
    with claims_lock():
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        stores: dict[int, Path] = {}
        for path in sorted(root.glob("slot-*")):
            suffix = path.name.removeprefix("slot-")
            if suffix.isdigit() and path == image_store(Plan(int(suffix))):
                stores[int(suffix)] = path
        states = [
            (
                slot,
                Path(f"/run/netns/{Plan(slot).netns}").exists(),
                any(m == str(path) or m.startswith(f"{path}/") for m in mounts),
            )
            for slot, path in stores.items()
        ]
        for slot in idle_stores(states):
            target = root / f"reclaim-{slot}-{os.getpid()}"
            stores[slot].rename(target)
            doomed.append(target)
            removed.append(stores[slot].name)
    for index, target in enumerate(doomed):
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file() and not f.is_symlink())
        subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=False)
        removed[index] += f" ({size / 1e9:.1f} GB)"
    return removed


def teardown(state: Path, locked: bool = False) -> list[str]:
    """Kill the node's cgroup tree, delete its namespace, tagged firewall rules and cgroups. Idempotent.

    Only a slot this state holds: when the slot's claim names another cluster's state (this state file
    outlived a reboot and the slot was taken since), only this state's own file goes.
    """
    if not locked:
        with claims_lock():
            return teardown(state, locked=True)
    saved = state / "slot"
    if not saved.exists():
        return []
    plan = Plan(int(saved.read_text()))
    owner = claim_owner(plan)
    if owner is not None and owner != state.resolve():
        saved.unlink(missing_ok=True)
        return [f"nothing: slot {plan.slot} is held by {owner}"]
    done: list[str] = []
    deadline = time.monotonic() + 20
    while (pids := cgroup_pids(plan) - {os.getpid()}) and time.monotonic() < deadline:
        for pid in pids:
            common.send_signal(pid, signal.SIGKILL)
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
    saved.unlink(missing_ok=True)
    # The claim's record goes with the claim: a record left behind would make the next cluster's fresh
    # namespace look stale (an old owner) in the moment before that cluster records its own.
    claim_file(plan).unlink(missing_ok=True)
    return done


def write_configs(state: Path, plan: Plan, pki: Path, api_port: int) -> None:
    (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (state / "pod-logs").mkdir(exist_ok=True)
    for path, text in config_files(state, plan, pki, api_port).items():
        path.write_text(text)


def wait(what: str, check: Callable[[], object], timeout: float, log: Path | None = None) -> None:
    def tail() -> str:
        lines = common.log_tail(log, 8) if log is not None else []
        return "\n" + "\n".join(lines) if log is not None and log.exists() else ""

    common.wait_for(what, check, timeout, interval=0.2, hint=tail, error=NodeError)


def issue(pki: Path, stem: str, subject: str, extensions: list[str]) -> None:
    """A key and a certificate signed by the cluster CA (EC P-256, ten years: a throwaway test cluster)."""
    common.issue(pki, stem, subject, extensions, error=NodeError)


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
