"""What the hack/ scripts share: paths, the tool cache, commands, kubectl, waiting, certificates, image import.

Each of these was written two to four times across cluster.py, node.py, demo.py, images.py and tools.py;
one copy here keeps their behaviour the same everywhere (the same openssl arguments for every certificate,
the same `ctr` invocation for every image the real node imports).

Every function that can fail takes ``error``: the calling script's own exception class (ClusterError,
NodeError, ...), so each script keeps reporting failures the way it did. All of them derive from HackError.

Standard library only: cluster.py and tools.py run before any virtualenv exists.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
# Built tools, wrapper modules, buildah's storage and the node's image store: outlive clones and `cluster-down`.
CACHE = Path(os.environ.get("SDC_TOOLS_CACHE", Path.home() / ".cache" / "sdc-llm"))
# The local cluster's state (certificates, logs, pids, the kubeconfig), per worktree unless SDC_CLUSTER_DIR says.
STATE = Path(os.environ.get("SDC_CLUSTER_DIR", ROOT / ".cluster"))
KUBECONFIG = STATE / "kubeconfig"

T = TypeVar("T")


class HackError(Exception):
    """A failure with a one-line explanation for the user."""


def run(
    argv: list[str],
    *,
    stdin: str | None = None,
    check: bool = True,
    error: type[Exception] = HackError,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with its output captured as text; a failure (with `check`) raises `error` naming it
    (`what`, by default the command's first words) with the end of what it said."""
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise error(f"{what or ' '.join(argv[:4]) + (' ...' if len(argv) > 4 else '')} failed: {detail}")
    return result


def send_signal(pid: int, sig: int, group: bool = False) -> None:
    """Signal a process (or its process group); one already gone is not an error."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kubectl(
    kubeconfig: Path,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    error: type[Exception] = HackError,
    bin_dir: Path = BIN,
) -> str:
    """`kubectl --kubeconfig=... args`, its stdout; a failure (with `check`) raises `error` with kubectl's words."""
    result = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise error(f"kubectl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def wait_for(
    what: str,
    check: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.5,
    exited: Callable[[], str | None] | None = None,
    hint: Callable[[], str] | None = None,
    error: type[Exception] = HackError,
) -> T:
    """Poll `check` until it returns something true (returned) or `timeout` seconds pass.

    `exited` says why waiting is pointless (a process we wait on has gone) or None; `hint` is appended to
    the timeout message (where to look).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if exited is not None and (why := exited()):
            raise error(why)
        time.sleep(interval)
    raise error(f"timed out after {timeout:.0f}s waiting for {what}{hint() if hint else ''}")


def log_tail(log: Path, lines: int) -> list[str]:
    """The last lines of a log file (none when it does not exist)."""
    if not log.exists():
        return []
    return log.read_text(errors="replace").strip().splitlines()[-lines:]


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


# ---------------------------------------------------------------- certificates

# EC P-256 keys, unencrypted: a throwaway test cluster.
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
DAYS = "3650"


def openssl(*args: str, error: type[Exception] = HackError) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise error(f"openssl {args[0]} failed: {result.stderr.strip()}")


def issue_ca(pki: Path, subject: str, error: type[Exception] = HackError) -> None:
    """A self-signed CA (ca.key, ca.crt) in `pki`."""
    keys = ["-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt")]
    openssl("req", "-x509", *EC_KEY, *keys, "-days", DAYS, "-subj", subject, error=error)


def issue(pki: Path, stem: str, subject: str, extensions: list[str], error: type[Exception] = HackError) -> None:
    """A key and a certificate signed by the cluster CA, with `extensions` (openssl -addext) copied in."""
    addext = [arg for ext in extensions for arg in ("-addext", ext)]
    key, csr, crt = (str(pki / f"{stem}.{suffix}") for suffix in ("key", "csr", "crt"))
    openssl("req", *EC_KEY, "-keyout", key, "-out", csr, "-subj", subject, *addext, error=error)
    ca = ["-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial"]
    openssl("x509", "-req", "-in", csr, *ca, "-days", DAYS, "-copy_extensions", "copyall", "-out", crt, error=error)


def kubeconfig(
    cluster_name: str, cluster: Mapping[str, object], user_name: str, user: Mapping[str, object], context: str
) -> dict[str, object]:
    """A kubeconfig with one cluster, one user and one context joining them (the current one)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": dict(cluster)}],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user_name}}],
        "current-context": context,
    }


# ---------------------------------------------------------------- the real node's containerd


def ctr(holder: int, address: Path) -> list[str]:
    """`ctr` inside the real node's namespaces (those of its holder process), in containerd's k8s.io
    namespace, where the kubelet looks for images."""
    return ["nsenter", "-t", str(holder), "-m", "-n", "--", "ctr", f"--address={address}", "-n", "k8s.io"]


def import_image(holder: int, address: Path, archive: Path, what: str, error: type[Exception] = HackError) -> None:
    """`ctr images import` of an image archive (OCI or docker-archive) into the real node's containerd."""
    result = subprocess.run(
        [*ctr(holder, address), "images", "import", str(archive)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise error(f"ctr images import {what} failed: {result.stderr.strip()[-2000:]}")
