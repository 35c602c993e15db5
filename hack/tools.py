#!/usr/bin/env python3
"""Build the test cluster's binaries from Go modules and link them into bin/.

Why this exists: no Docker engine and no package registry ships kube-apiserver
here, but the Go module proxy serves the sources. `k8s.io/kubernetes` and
`go.etcd.io/etcd/server/v3` replace their staging modules with local paths, so
they cannot be `go install`ed; we generate a throwaway wrapper module that
pins the same versions from the registry instead.

Builds are cached under ``$SDC_TOOLS_CACHE`` (default ``~/.cache/sdc-llm``)
keyed by version, so a fresh clone on the same machine reuses them and a
second run does nothing. Only the standard library is used: this runs before
any virtualenv exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = ROOT / "hack" / "tool-versions.env"
if str(ROOT) not in sys.path:  # run as a script: make `hack` importable
    sys.path.insert(0, str(ROOT))

from hack import common  # noqa: E402
from hack.common import BIN, CACHE  # noqa: E402

K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The real node's binaries, built from the same wrapper module (hack/node.py runs them).
NODE_BINARIES = ("kubelet", "kube-proxy")
# The real node's NetworkPolicy enforcer (its firewall controller only; hack/node.py runs it).
KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2"
# Debian packages for the real node and the image builds: package -> a file that proves it is installed.
APT_PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "conntrack": "/usr/sbin/conntrack",
    "buildah": "/usr/bin/buildah",
    "skopeo": "/usr/bin/skopeo",
    "umoci": "/usr/bin/umoci",
    "debootstrap": "/usr/sbin/debootstrap",
    "busybox-static": "/bin/busybox",
    # kube-router's network policy controller keeps its pod sets in ipsets (`ipset restore`).
    "ipset": "/usr/sbin/ipset",
}


class ToolError(common.HackError):
    """A failure with a one-line explanation for the user."""


def read_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-buildvcs=false -trimpath"
    return env


def require_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolError("Go is not installed or not on PATH; install Go >= 1.24 and rerun `make tools`")
    return go


def run_go(args: list[str], cwd: Path, what: str, extra_env: dict[str, str] | None = None) -> str:
    """Run a go command, printing a heartbeat so long builds show progress."""
    started = time.monotonic()
    done = threading.Event()
    lines: list[str] = []

    def heartbeat() -> None:
        while not done.wait(30):
            pkgs = sum(1 for line in lines if not line.startswith(("go:", "#")))
            print(f"    ... {what}: {int(time.monotonic() - started)}s, {pkgs} packages compiled", flush=True)

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    proc = subprocess.Popen(
        ["go", *args],
        cwd=cwd,
        env={**go_env(), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
    rc = proc.wait()
    done.set()
    if rc != 0:
        tail = "\n".join(lines[-15:])
        if re.search(r"proxy|dial tcp|i/o timeout|no such host|connection refused|TLS handshake", tail):
            proxy = go_env().get("GOPROXY") or "default"
            raise ToolError(f"cannot reach the Go module proxy ({proxy}) while {what}: {lines[-1] if lines else ''}")
        raise ToolError(f"{what} failed (exit {rc}):\n{tail}")
    return "\n".join(lines)


def module_gomod(module: str, version: str, scratch: Path) -> str:
    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "go.mod").exists():
        (scratch / "go.mod").write_text("module sdc.local/scratch\n\ngo 1.24\n")
    out = run_go(["mod", "download", "-json", f"{module}@{version}"], scratch, f"fetching {module}@{version}")
    info = json.loads(out[out.index("{") :])
    if "Error" in info:
        raise ToolError(f"cannot download {module}@{version}: {info['Error']}")
    return Path(info["GoMod"]).read_text()


def wrapper_gomod(upstream: str, module: str, version: str, staging_version: str | None) -> str:
    """Turn an upstream go.mod with local replaces into a wrapper module's go.mod.

    Requires are copied verbatim (same dependency versions as upstream's own
    build); each ``=> ./staging/...`` or ``=> ../x`` replace is redirected to the
    published module at the matching version.
    """
    go_directive = re.search(r"^go (\S+)", upstream, re.M)
    requires = re.findall(r"^require \((.*?)^\)", upstream, re.M | re.S)
    single_requires = re.findall(r"^require (\S+ \S+)", upstream, re.M)
    replaces: list[str] = []
    for block in re.findall(r"^replace \((.*?)^\)", upstream, re.M | re.S) + re.findall(
        r"^replace (\S+ .*)$", upstream, re.M
    ):
        for line in block.strip().splitlines():
            line = line.split("//")[0].strip()
            if not line or "=>" not in line:
                continue
            left, right = (part.strip() for part in line.split("=>"))
            name = left.split()[0]
            if right.startswith(".") and "FORBIDDEN" in right:
                continue  # a guard against importing the repo root, not a real module
            if right.startswith("."):
                target_version = staging_version or version
                replaces.append(f"\t{name} => {name} {target_version}")
            else:
                replaces.append(f"\t{line}")
    parts = [
        "module sdc.local/tools-wrapper\n",
        f"go {go_directive.group(1) if go_directive else '1.24'}\n",
        f"require {module} {version}\n",
    ]
    for block in requires:
        kept = [line for line in block.splitlines() if line.strip() and not line.strip().startswith(module + " ")]
        parts.append("require (\n" + "\n".join(kept) + "\n)\n")
    for req in single_requires:
        parts.append(f"require {req}\n")
    if replaces:
        parts.append("replace (\n" + "\n".join(replaces) + "\n)\n")
    return "\n".join(parts)


def build_wrapped(
    name: str, module: str, version: str, staging_version: str | None, packages: dict[str, str], ldflags: str
) -> None:
    """Build main packages of a module that carries local replace directives."""
    out_dir = CACHE / "tools" / f"{name}-{version}"
    if all((out_dir / binary).exists() for binary in packages):
        return
    work = CACHE / "wrappers" / f"{name}-{version}"
    upstream = module_gomod(module, version, CACHE / "wrappers" / "scratch")
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(wrapper_gomod(upstream, module, version, staging_version))
    for binary, pkg in packages.items():
        if not (out_dir / binary).exists():
            go_build(work, pkg, binary, version, out_dir, ldflags)


def go_build(work: Path, pkg: str, binary: str, version: str, out_dir: Path, ldflags: str) -> None:
    """`go build` one main package in a wrapper module into out_dir/binary (renamed in place once whole)."""
    tmp = out_dir / f".{binary}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    print(f"==> building {binary} {version} (cold: minutes; cached afterwards)", flush=True)
    started = time.monotonic()
    run_go(["build", "-mod=mod", "-v", f"-ldflags={ldflags}", "-o", str(tmp), pkg], work, f"building {binary}")
    tmp.rename(out_dir / binary)
    print(f"    built {binary} in {int(time.monotonic() - started)}s", flush=True)


def go_install(name: str, pkg: str, version: str, binary: str) -> None:
    out_dir = CACHE / "tools" / f"{name}-{version}"
    if (out_dir / binary).exists():
        return
    print(f"==> installing {binary} {version} (go install {pkg})", flush=True)
    started = time.monotonic()
    gobin = out_dir / ".gobin"
    gobin.mkdir(parents=True, exist_ok=True)
    install = ["install", "-v", "-ldflags=-s -w", f"{pkg}@{version}"]
    run_go(install, CACHE, f"installing {binary}", extra_env={"GOBIN": str(gobin)})
    (gobin / binary).rename(out_dir / binary)
    shutil.rmtree(gobin, ignore_errors=True)
    print(f"    installed {binary} in {int(time.monotonic() - started)}s", flush=True)


def floors_gomod(module: str, version: str, floors: list[str], go_version: str = "1.24") -> str:
    """A wrapper module's go.mod: `module` at `version`, with some dependencies raised to at least `floors`.

    Why: a tool whose newest release the proxy serves still pins dependency
    versions with published fixes after them; minimal version selection takes
    the higher of the wrapper's and the tool's own requirement, so the build
    uses the fixed ones and the tool's code is unchanged. ``floors`` are
    ``path@version`` strings.
    """
    lines = [f"\t{module} {version}"]
    for floor in floors:
        path, sep, floor_version = floor.strip().partition("@")
        if not (sep and path and floor_version.startswith("v")):
            raise ToolError(f"a dependency floor must read path@vX.Y.Z, not {floor!r}")
        lines.append(f"\t{path} {floor_version}")
    return f"module sdc.local/tools-wrapper\n\ngo {go_version}\n\nrequire (\n" + "\n".join(lines) + "\n)\n"


def build_with_floors(
    name: str, module: str, version: str, pkg: str, binary: str, floors: list[str], ldflags: str = "-s -w"
) -> None:
    """Build one main package of `module` through a wrapper module that raises dependency floors."""
    out_dir = CACHE / "tools" / f"{name}-{version}"
    if (out_dir / binary).exists():
        return
    work = CACHE / "wrappers" / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(floors_gomod(module, version, floors))
    go_build(work, pkg, binary, version, out_dir, ldflags)


def apt_install(packages: dict[str, str]) -> None:
    """Install the missing Debian packages, with services kept from starting (policy-rc.d answers 101).

    Skipped when every package is present, when SDC_REAL_NODE=0, or when not root (the node needs root anyway).
    """
    missing = [pkg for pkg, path in packages.items() if not Path(path).exists()]
    if not missing or os.environ.get("SDC_REAL_NODE") == "0":
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolError(f"missing {', '.join(missing)}: install them (Debian packages) or set SDC_REAL_NODE=0")
    print(f"==> apt-get install {' '.join(missing)}", flush=True)
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# written by sdc-llm hack/tools.py while installing packages\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        ):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ToolError(f"{' '.join(argv[:2])} failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
    finally:
        if ours:
            policy.unlink(missing_ok=True)


def build_pause(version: str) -> None:
    """The pod sandbox binary from k8s.io/kubernetes' build/pause/linux/pause.c, static (gcc -static)."""
    out_dir = CACHE / "tools" / f"pause-{version}"
    if (out_dir / "pause").exists():
        return
    scratch = CACHE / "wrappers" / "scratch"
    module_gomod("k8s.io/kubernetes", version, scratch)  # makes sure the module's sources are in GOMODCACHE
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    source = Path(modcache) / f"k8s.io/kubernetes@{version}" / "build" / "pause" / "linux" / "pause.c"
    if shutil.which("gcc") is None:
        raise ToolError("gcc is needed to build the pause binary (apt-get install gcc libc6-dev)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".pause.tmp"
    gcc = ["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={version}", "-o", str(tmp), str(source)]
    common.run(gcc, error=ToolError, what="building pause")
    subprocess.run(["strip", str(tmp)], check=False)
    tmp.rename(out_dir / "pause")


def link(name: str, version: str, binary: str) -> None:
    BIN.mkdir(exist_ok=True)
    target = CACHE / "tools" / f"{name}-{version}" / binary
    dest = BIN / binary
    if dest.is_symlink() and os.readlink(dest) == str(target):
        return
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.symlink_to(target)


def main() -> int:
    started = time.monotonic()
    try:
        require_go()
        CACHE.mkdir(parents=True, exist_ok=True)
        v = read_versions()
        k8s = v["KUBERNETES_VERSION"]
        staging = "v0." + k8s.removeprefix("v").split(".", 1)[1]
        major, minor = k8s.removeprefix("v").split(".")[:2]
        k8s_ldflags = " ".join(
            [
                "-s -w",
                *(
                    f"-X {pkg}.gitVersion={k8s} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}"
                    f" -X {pkg}.gitTreeState=clean"
                    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                ),
            ]
        )

        def kubernetes(binaries: tuple[str, ...]) -> None:
            commands = {b: f"k8s.io/kubernetes/cmd/{b}" for b in binaries}
            build_wrapped("kubernetes", "k8s.io/kubernetes", k8s, staging, commands, k8s_ldflags)

        kubernetes(K8S_BINARIES)
        real_node = os.environ.get("SDC_REAL_NODE") != "0"
        if real_node:
            apt_install(APT_PACKAGES)
            kubernetes(NODE_BINARIES)
            build_pause(k8s)
            go_install("coredns", "github.com/coredns/coredns", v["COREDNS_VERSION"], "coredns")
            build_with_floors(
                "kube-router",
                KUBE_ROUTER_MODULE,
                v["KUBE_ROUTER_VERSION"],
                f"{KUBE_ROUTER_MODULE}/cmd/kube-router",
                "kube-router",
                v["KUBE_ROUTER_DEPENDENCY_FLOORS"].split(","),
                f"-s -w -X {KUBE_ROUTER_MODULE}/pkg/version.Version={v['KUBE_ROUTER_VERSION']}",
            )
        etcd = v["ETCD_VERSION"]
        build_wrapped("etcd", "go.etcd.io/etcd/server/v3", etcd, etcd, {"etcd": "go.etcd.io/etcd/server/v3"}, "-s -w")
        go_install("kwok", "sigs.k8s.io/kwok/cmd/kwok", v["KWOK_VERSION"], "kwok")
        go_install("helm", "helm.sh/helm/v3/cmd/helm", v["HELM_VERSION"], "helm")
        go_install("kube-score", "github.com/zegl/kube-score/cmd/kube-score", v["KUBE_SCORE_VERSION"], "kube-score")
        for binary in K8S_BINARIES:
            link("kubernetes", k8s, binary)
        link("etcd", etcd, "etcd")
        link("kwok", v["KWOK_VERSION"], "kwok")
        link("helm", v["HELM_VERSION"], "helm")
        link("kube-score", v["KUBE_SCORE_VERSION"], "kube-score")
        if real_node:
            for binary in NODE_BINARIES:
                link("kubernetes", k8s, binary)
            link("pause", k8s, "pause")
            link("coredns", v["COREDNS_VERSION"], "coredns")
            link("kube-router", v["KUBE_ROUTER_VERSION"], "kube-router")
    except ToolError as err:
        print(f"make tools: {err}", file=sys.stderr)
        return 1
    print(f"tools ready in bin/ ({int(time.monotonic() - started)}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
