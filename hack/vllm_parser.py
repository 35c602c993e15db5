#!/usr/bin/env python3
"""vLLM's own `vllm serve` argument parser, at the version of the operator's default image.

vLLM cannot run here (its image is CUDA-only, and there is no GPU), but its
command line can still be checked by the real thing: the vllm wheel of that
version (`pip download --no-deps`, cached) provides the Python sources, a
handful of small pure-Python or manylinux packages (VLLM_PARSER_DEPS, installed
with --no-deps into a cached directory) let the serve subcommand import, and
vLLM's CPU platform stands in for CUDA. torch and transformers come from the
project's virtualenv. Nothing here reaches beyond PyPI.

`prepare` makes the cache; `check` reads a JSON list of argument lists (what
follows `vllm serve`) on stdin and prints, for each, either the parsed engine
arguments that matter to the operator or the parser's error. One process
checks a whole table, so the import (several seconds) is paid once.
The version comes from sdc_operator.settings.VLLM_VERSION: the image tag and
the parser version live in that one place.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SDC_TOOLS_CACHE", Path.home() / ".cache" / "sdc-llm")) / "vllm-parser"
# What `vllm serve`'s import chain needs beyond our virtualenv (found by importing it), pinned.
VLLM_PARSER_DEPS = (
    "psutil==7.2.2",
    "cbor2==6.0.1",
    "pyzmq==27.2.0",
)


def version() -> str:
    sys.path.insert(0, str(ROOT / "operator"))
    from sdc_operator.settings import VLLM_VERSION

    return VLLM_VERSION


def paths(ver: str) -> tuple[Path, Path, Path]:
    return CACHE / "wheels", CACHE / f"src-{ver}", CACHE / f"deps-{ver}"


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"vllm parser: pip {' '.join(args[:3])} failed: {result.stderr.strip()[-600:]}")


def prepare(ver: str) -> tuple[Path, Path]:
    wheels, src, deps = paths(ver)
    if not (src / ".done").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        found = sorted(wheels.glob(f"vllm-{ver}-*x86_64.whl"))
        if not found:
            print(f"==> downloading the vllm {ver} wheel (once; about 340 MB)", file=sys.stderr, flush=True)
            pip("download", "-q", "--no-deps", "--only-binary", ":all:", f"vllm=={ver}", "-d", str(wheels))
            found = sorted(wheels.glob(f"vllm-{ver}-*.whl"))
        with zipfile.ZipFile(found[0]) as wheel:  # the Python sources only: no CUDA kernels
            members = [m for m in wheel.namelist() if not m.endswith(".so") and "/third_party/" not in m]
            wheel.extractall(src, members)
        (src / ".done").write_text("ok")
    if not (deps / ".done").exists():
        pip("install", "-q", "--no-deps", "--upgrade", "--target", str(deps), *VLLM_PARSER_DEPS)
        (deps / ".done").write_text("\n".join(VLLM_PARSER_DEPS))
    return src, deps


def check(argvs: list[list[str]]) -> list[dict[str, Any]]:
    """Parse each argument list with `vllm serve`'s parser and validation (runs inside the prepared path)."""
    from vllm import platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms.current_platform = CpuPlatform()  # the parser's defaults ask the platform; there is no CUDA here
    # The parser and validation `vllm serve` itself uses (vllm/entrypoints/cli/serve.py), without
    # importing the server.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    out: list[dict[str, Any]] = []
    for argv in argvs:
        parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(argv)
                validate_parsed_serve_args(args)
                if args.model_tag is not None:  # what `vllm serve` does with the positional model
                    args.model = args.model_tag
                engine = AsyncEngineArgs.from_cli_args(args)
        except (SystemExit, ValueError, TypeError) as err:
            out.append({"ok": False, "error": (stderr.getvalue().strip() or str(err))[-800:]})
            continue
        out.append(
            {
                "ok": True,
                "model": engine.model,
                "served_model_name": engine.served_model_name,
                "tensor_parallel_size": engine.tensor_parallel_size,
                "max_model_len": engine.max_model_len,
                "trust_remote_code": engine.trust_remote_code,
                "host": args.host,
                "port": args.port,
            }
        )
    return out


def main() -> int:
    ver = version()
    src, deps = prepare(ver)
    if sys.argv[1:2] == ["prepare"]:
        print(f"vllm {ver} parser ready in {src}")
        return 0
    sys.path[:0] = [str(src), str(deps)]
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    argvs = json.loads(sys.stdin.read())
    print(json.dumps(check(argvs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
