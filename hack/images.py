#!/usr/bin/env python3
"""Build the project's images here, without a registry, and load them into the real node.

Why this way: nothing on this machine can pull from a container registry, but
Debian's package mirror and PyPI are reachable. So the base image is made from
Debian's packages (``debootstrap --variant=minbase bookworm`` plus ``python3
python3-venv``), every ``images/*.Dockerfile`` is built on it with ``buildah
bud --pull-never`` (the Dockerfiles take the base as the ``BASE_IMAGE`` build
argument; on a Docker host they default to the official Python image), and
each image goes into the node's containerd through ``skopeo`` and ``ctr images
import``.

Everything is cached by content: an image's key is a hash of its Dockerfile,
the base and every file its ``COPY`` lines name; an image whose key is
already built is not rebuilt, and one already in the node's containerd is not
loaded again, so a warm run costs seconds. pip's cache is a cache mount of the
build, so a rebuild downloads nothing it already has.

Buildah's storage lives in ``$SDC_TOOLS_CACHE/containers`` (default
``~/.cache/sdc-llm``), not in the host's /var/lib/containers.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack import common  # noqa: E402
from hack import node as real_node  # noqa: E402
from hack.common import CACHE  # noqa: E402

STORAGE = CACHE / "containers"
NODE_STATE = common.STATE / "node"
IMAGES_DIR = ROOT / "images"
DEBIAN_MIRROR = os.environ.get("SDC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_TAG = "localhost/sdc-base:bookworm-python3"
LABEL = "dev.sdc.input-hash"
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
# Build-context files made by another of the project's scripts (not committed): made when missing.
GENERATED = {"build/ollama/ollama": ["hack/ollama_build.py"]}


class ImageError(common.HackError):
    """A failure with a one-line explanation for the user."""


# ---------------------------------------------------------------- pure parts


def chart_tags(chart: Path) -> dict[str, str]:
    """Image name (Dockerfile stem) -> the tag the chart's defaults use.

    The operator and orchestrator are ``<repository>:<appVersion>``; engine
    images come from ``operator.engineImages`` (the key, camelCase, is the Dockerfile stem:
    ``vllmCpu`` -> ``vllm-cpu``).
    """
    import yaml

    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = str(yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"])
    tags = {
        name: f"{values[name]['image']['repository']}:{values[name]['image'].get('tag') or app_version}"
        for name in ("operator", "orchestrator")
    }
    for key, reference in values["operator"].get("engineImages", {}).items():
        name = re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), key)
        tags[name] = str(reference) or operator_default_image(name)
    return tags


def operator_default_image(engine: str) -> str:
    """The operator's own default for an engine the chart leaves empty (one place: sdc_operator.settings)."""
    try:
        from sdc_operator.settings import OperatorSettings
    except ImportError:  # run without the project's virtualenv: such an image cannot be named
        return ""
    field = OperatorSettings.model_fields.get(f"{engine.replace('-', '_')}_image")
    return str(getattr(field, "default", "") or "")


def normalize(reference: str) -> str:
    """The fully qualified name the kubelet asks containerd for (`ollama/ollama:x` -> `docker.io/ollama/ollama:x`).

    Buildah would otherwise qualify a short name with `localhost/`, and the node would not find it.
    """
    first, _, rest = reference.partition("/")
    if not rest:
        return f"docker.io/library/{reference}"
    if "." in first or ":" in first or first == "localhost":
        return reference
    return f"docker.io/{reference}"


def copy_sources(dockerfile: str) -> list[str]:
    """Paths of the build context that the Dockerfile's COPY/ADD lines take (not `--from` stages)."""
    out: list[str] = []
    joined = re.sub(r"\\\n", " ", dockerfile)
    for line in joined.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
            continue
        out += args[:-1]
    return out


def context_files(root: Path, sources: list[str]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = root / source
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and not SKIP_PARTS.intersection(p.parts)]
    return files


def input_hash(dockerfile: Path, root: Path, base_id: str) -> str:
    """sha256 over the Dockerfile, the base image and every context file it copies (path and bytes)."""
    digest = hashlib.sha256()
    text = dockerfile.read_text()
    digest.update(text.encode())
    digest.update(base_id.encode())
    for path in context_files(root, copy_sources(text)):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def base_key() -> str:
    return hashlib.sha256(f"bookworm minbase {DEBIAN_MIRROR} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------- buildah, skopeo, ctr


def storage_flags() -> list[str]:
    return [f"--root={STORAGE / 'storage'}", f"--runroot={STORAGE / 'run'}", "--storage-driver=overlay"]


def buildah(*args: str, check: bool = True, quiet: bool = True) -> str:
    # TMPDIR: buildah keeps RUN --mount=type=cache directories (pip's cache) under it.
    tmp = CACHE / "buildah-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["buildah", *storage_flags(), *args],
        capture_output=quiet,
        text=True,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-3000:] if quiet else ""
        raise ImageError(f"buildah {args[0]} failed (exit {result.returncode}) {detail}")
    return result.stdout or ""


def image_info(tag: str) -> dict[str, object] | None:
    out = buildah("inspect", "--type", "image", tag, check=False)
    if not out.strip():
        return None
    info: dict[str, object] = json.loads(out)
    return info


def image_label(tag: str) -> str | None:
    info = image_info(tag)
    if info is None:
        return None
    config = info.get("OCIv1", {})
    labels = config.get("config", {}).get("Labels") or {} if isinstance(config, dict) else {}
    value = labels.get(LABEL)
    return str(value) if value else None


def make_base() -> str:
    """The Debian bookworm + python3 base, built once per package set; returns its tag."""
    key = base_key()
    if image_label(BASE_TAG) == key:
        return BASE_TAG
    print(f"==> base image: debootstrap --variant=minbase bookworm + {' '.join(BASE_PACKAGES)} (cold: ~2 min)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sdc-base-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ImageError(f"debootstrap failed: {result.stdout[-2000:]}{result.stderr[-1000:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = work / "rootfs.tar"
        subprocess.run(
            [
                "tar",
                "-C",
                str(rootfs),
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-cf",
                str(tarball),
                ".",
            ],
            check=True,
        )
        (work / "Dockerfile").write_text('FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["python3"]\n')
        buildah(
            "bud",
            "--pull-never",
            "--layers=false",
            f"--label={LABEL}={key}",
            "-t",
            BASE_TAG,
            "-f",
            str(work / "Dockerfile"),
            str(work),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"    base image in {time.monotonic() - started:.0f}s")
    return BASE_TAG


def pip_trust() -> list[str]:
    """Volumes that let pip inside the build trust what pip here trusts.

    Where HTTPS to PyPI passes a proxy with its own CA, the host's pip is told
    so (`pip config`: global.cert); the build gets the same bundle and a pip.conf
    naming it, as build-time volumes: nothing of it lands in the image.
    """
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True, check=False
    )
    cert = os.environ.get("PIP_CERT") or result.stdout.strip()
    if not cert or not Path(cert).is_file():
        return []
    conf = CACHE / "buildah-pip.conf"
    conf.write_text("[global]\ncert = /etc/sdc-build-ca.crt\n")
    return [f"--volume={cert}:/etc/sdc-build-ca.crt:ro", f"--volume={conf}:/etc/pip.conf:ro"]


def build(name: str, tag: str, base: str) -> str:
    """Build images/<name>.Dockerfile as `tag` unless an image with the same input hash exists; returns the hash."""
    dockerfile = IMAGES_DIR / f"{name}.Dockerfile"
    for source in copy_sources(dockerfile.read_text()):
        if not (ROOT / source).exists() and source in GENERATED:
            print(f"==> {source} is missing: {' '.join(GENERATED[source])}", flush=True)
            subprocess.run([sys.executable, *(str(ROOT / a) for a in GENERATED[source])], check=True)
    info = image_info(base)
    base_id = str(info.get("FromImageID", "")) if info else ""
    key = input_hash(dockerfile, ROOT, base_id)
    if image_label(tag) == key:
        print(f"    {tag}: up to date ({key})")
        return key
    print(f"==> building {tag} from {dockerfile.relative_to(ROOT)}", flush=True)
    started = time.monotonic()
    buildah(
        "bud",
        "--pull-never",
        "--layers",
        "--network=host",
        f"--build-arg=BASE_IMAGE={base}",
        *pip_trust(),
        f"--label={LABEL}={key}",
        "-t",
        tag,
        "-f",
        str(dockerfile),
        str(ROOT),
        quiet=False,
    )
    print(f"    built {tag} in {time.monotonic() - started:.0f}s", flush=True)
    return key


def image_layers(tag: str) -> dict[str, int]:
    """The image's layers (uncompressed: their digests are what containerd stores them by) and sizes,
    as its manifest gives them (empty when unknown)."""
    info = image_info(tag) or {}
    try:
        manifest = json.loads(str(info.get("Manifest") or "{}"))
        return {str(layer["digest"]): int(layer.get("size", 0)) for layer in manifest.get("layers", [])}
    except (ValueError, TypeError, AttributeError, KeyError):
        return {}


def room_needed(layers: dict[str, int], on_node: set[str]) -> int:
    """Free bytes a load needs at its peak: the archive skopeo writes (every layer), and for each layer
    the node does not hold yet its copy in containerd's content store and its unpacked snapshot; a GiB
    to spare. (A rebuild that changed only the code layer needs about the archive alone.)"""
    new = sum(size for digest, size in layers.items() if digest not in on_node)
    return sum(layers.values()) + 2 * new + 2**30


def make_room(tag: str, needed: int) -> None:
    """Fail before a load that cannot fit, after deleting the image stores of idle node slots; a
    load that runs out of disk half way leaves a broken image behind and says only ENOSPC."""
    if shutil.disk_usage(CACHE).free >= needed:
        return
    for removed in real_node.reclaim_idle_stores():
        print(f"    removed the idle node image store {removed} to make room for {tag}")
    free = shutil.disk_usage(CACHE).free
    if free < needed:
        raise ImageError(
            f"loading {tag} needs about {needed / 1e9:.1f} GB free under {CACHE}, {free / 1e9:.1f} GB is: "
            f"free some (`df -h {CACHE}`; another real-node cluster's image store is {CACHE / 'node'}/slot-N, "
            "kept while it runs)"
        )


def load(tag: str, key: str) -> None:
    """Copy the image into the real node's containerd (k8s.io namespace), unless it is already there."""
    stamps = real_node.image_store(real_node.Plan(int((NODE_STATE / "slot").read_text()))) / "loaded"
    stamp = stamps / re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
    holder_file = NODE_STATE / "holder.pid"
    if not holder_file.exists():
        raise ImageError("no real node is running here: `make cluster-up` first (or --no-load)")
    holder = int(holder_file.read_text())
    ctr = common.ctr(holder, real_node.containerd_socket(NODE_STATE))
    if stamp.exists() and stamp.read_text() == key:
        listed = subprocess.run([*ctr, "images", "ls", "-q", f"name=={tag}"], capture_output=True, text=True)
        if listed.stdout.strip() == tag:
            print(f"    {tag}: already on the node")
            return
    listed_content = subprocess.run([*ctr, "content", "ls", "-q"], capture_output=True, text=True, check=False)
    make_room(tag, room_needed(image_layers(tag), set(listed_content.stdout.split())))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sdc-load-", dir=CACHE) as tmp:
        archive = Path(tmp) / "image.tar"
        source = f"containers-storage:[overlay@{STORAGE / 'storage'}+{STORAGE / 'run'}]{tag}"
        copy = ["skopeo", "copy", "--quiet", source, f"docker-archive:{archive}:{tag}"]
        common.run(copy, error=ImageError, what=f"skopeo copy {tag}")
        common.import_image(holder, real_node.containerd_socket(NODE_STATE), archive, tag, error=ImageError)
    stamps.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    print(f"    loaded {tag} into the node in {time.monotonic() - started:.0f}s", flush=True)


def release_storage() -> None:
    """Leave no mount behind: remove working containers, then undo containers/storage's own mounts.

    Buildah bind-mounts its overlay directory onto itself and keeps a failed
    build's container mounted; both would outlive the command.
    """
    buildah("rm", "--all", check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    ours = [m for m in mounts if m.startswith(str(STORAGE) + "/")]
    for mount in sorted(ours, key=len, reverse=True):
        subprocess.run(["umount", mount], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="Dockerfile stems to build (default: all in images/)")
    parser.add_argument("--no-load", action="store_true", help="build only; do not load into the node")
    args = parser.parse_args()
    # Line by line even into a pipe (make demo, CI logs): our lines and buildah's, which writes to the same
    # descriptors, then appear in the order they happen, as they happen, not in a block at the end.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    tags = chart_tags(ROOT / "charts" / "sdc")
    names = args.names or sorted(p.name.removesuffix(".Dockerfile") for p in IMAGES_DIR.glob("*.Dockerfile"))
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = open(CACHE / "images.lock", "w")  # noqa: SIM115 - held for the whole run
    fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per machine: buildah's storage is shared
    try:
        for tool in ("buildah", "skopeo", "debootstrap"):
            if shutil.which(tool) is None:
                raise ImageError(f"{tool} is not installed: run `make tools`")
        unknown = [n for n in names if not tags.get(n)]
        if unknown:
            raise ImageError(f"no chart default names an image for {', '.join(unknown)} (charts/sdc/values.yaml)")
        base = make_base()
        built = {name: build(name, normalize(tags[name]), base) for name in names}
        # A rebuilt tag leaves its previous image dangling; its own layers would pile up build after build.
        buildah("rmi", "--prune", check=False)
        if not args.no_load:
            for name, key in built.items():
                load(normalize(tags[name]), key)
    except (ImageError, OSError, subprocess.SubprocessError) as err:
        print(f"make images: {err}", file=sys.stderr)
        return 1
    finally:
        release_storage()
        lock.close()
    print(f"images ready in {time.monotonic() - started:.0f}s: {', '.join(tags[n] for n in names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
