#!/usr/bin/env python3
"""Build the `ollama` binary (CPU) from its Go module, pinned and cached like the other tools.

Why this is not a plain `go install github.com/ollama/ollama@vX`: module zips
drop `vendor/` directories, and llama.cpp inside ollama includes a few vendored
single-file headers (nlohmann/json, miniaudio, stb_image). Those headers are
taken from the llama-cpp-python source distribution on PyPI (the same llama.cpp
vendor tree; pinned by version and sha256 in hack/tool-versions.env), copied
into a small include directory and handed to cgo with CGO_CPPFLAGS. No cmake
step is needed for CPU inference: ggml's CPU backend compiles through cgo.
The version is stamped with -ldflags, otherwise /api/version says 0.0.0.

Output: ``$SDC_TOOLS_CACHE/tools/ollama-<version>/ollama``, linked as bin/ollama and copied to
build/ollama/ollama, where images/ollama.Dockerfile takes it (`make ollama`).
Cold: about 5 minutes of CPU; warm: nothing to do. Standard library only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hack.common import CACHE, ROOT
from hack.tools import ToolError, link, read_versions, require_go, run_go

# The headers llama.cpp includes from its (dropped) vendor/ directory.
VENDOR_HEADERS = (
    "nlohmann/json.hpp",
    "nlohmann/json_fwd.hpp",
    "miniaudio/miniaudio.h",
    "stb/stb_image.h",
)


def binary_path(version: str) -> Path:
    return CACHE / "tools" / f"ollama-{version}" / "ollama"


def vendor_headers(sdist_version: str, sha256: str) -> Path:
    """Unpack the vendored headers of llama-cpp-python's sdist into a cached include dir."""
    include = CACHE / "ollama-vendor" / f"llama-cpp-python-{sdist_version}"
    if all((include / h).exists() for h in VENDOR_HEADERS):
        return include
    with tempfile.TemporaryDirectory(prefix="sdc-ollama-") as tmp:
        print(f"==> downloading llama-cpp-python {sdist_version} sdist (vendored headers for ollama)", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        proc = subprocess.run(
            [*cmd, f"llama-cpp-python=={sdist_version}", "-d", tmp], capture_output=True, text=True, check=False
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise ToolError(f"pip download llama-cpp-python=={sdist_version} failed: {proc.stderr.strip()[-400:]}")
        digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise ToolError(f"llama-cpp-python sdist sha256 {digest} != pinned {sha256}")
        prefix = f"llama_cpp_python-{sdist_version}/vendor/llama.cpp/vendor/"
        staging = include.with_name(include.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(archives[0]) as tar:
            for header in VENDOR_HEADERS:
                member = tar.getmember(prefix + header)
                source = tar.extractfile(member)
                if source is None:
                    raise ToolError(f"{prefix + header} is not a file in the sdist")
                (staging / header).parent.mkdir(parents=True, exist_ok=True)
                (staging / header).write_bytes(source.read())
        shutil.rmtree(include, ignore_errors=True)
        staging.rename(include)
    return include


def build(version: str, include: Path) -> None:
    out = binary_path(version)
    if out.exists():
        return
    if shutil.which("g++") is None:
        raise ToolError("building ollama needs a C/C++ compiler (g++); install build-essential")
    print(f"==> building ollama {version} for CPU (cold: about 5 minutes; cached afterwards)", flush=True)
    started = time.monotonic()
    gobin = out.parent / ".gobin"
    gobin.mkdir(parents=True, exist_ok=True)
    ldflags = f"-s -w -X github.com/ollama/ollama/version.Version={version.removeprefix('v')}"
    env = {
        "GOBIN": str(gobin),
        "CGO_ENABLED": "1",
        "CGO_CPPFLAGS": f"-I{include}",
        # Portable CPU code: the binary also runs inside the image on another CPU.
        "CGO_CFLAGS": "-O2",
        "CGO_CXXFLAGS": "-O2",
    }
    run_go(
        ["install", "-v", f"-ldflags={ldflags}", f"github.com/ollama/ollama@{version}"], CACHE, "building ollama", env
    )
    (gobin / "ollama").rename(out)
    shutil.rmtree(gobin, ignore_errors=True)
    print(f"    built ollama in {int(time.monotonic() - started)}s", flush=True)


def stage_for_image(binary: Path) -> None:
    """A real file inside the build context for images/ollama.Dockerfile (bin/ is a symlink, and ignored)."""
    staged = ROOT / "build" / "ollama" / "ollama"
    if (
        staged.exists()
        and staged.stat().st_size == binary.stat().st_size
        and staged.read_bytes() == binary.read_bytes()
    ):
        return
    staged.parent.mkdir(parents=True, exist_ok=True)
    tmp = staged.with_suffix(".tmp")
    shutil.copy2(binary, tmp)
    tmp.rename(staged)


def main() -> int:
    try:
        require_go()
        v = read_versions()
        version = v["OLLAMA_VERSION"]
        if not binary_path(version).exists():
            include = vendor_headers(v["OLLAMA_HEADERS_SDIST_VERSION"], v["OLLAMA_HEADERS_SDIST_SHA256"])
            build(version, include)
        link("ollama", version, "ollama")
        stage_for_image(binary_path(version))
    except ToolError as err:
        print(f"make ollama: {err}", file=sys.stderr)
        return 1
    print(f"ollama {version} ready: bin/ollama -> {binary_path(version)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
