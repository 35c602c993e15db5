"""What the orchestrator adds to a request, side by side with the limit and with LiteLLM's proxy.

Four targets in the same run, against the same fast backend (benchmarks/fast_backend.py):
the backend directly (the limit), sdc-orchestrator's OpenAI route open (no keys, as in
local development), the same with API keys, rate and concurrency limits on (the chart's
default), and LiteLLM's proxy configured for the same backend. Load comes from a separate process
(benchmarks/load.py) at each concurrency, streaming and not; targets are
interleaved per level so that machine noise hits them alike.
LiteLLM runs from its own virtualenv (.venv-bench, made by `make bench`) because its
pins differ from ours. Run: `python benchmarks/orchestrator_overhead.py [--seconds 8]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, machine, median, percentile, table, versions, write_report
from tests.support.servers import free_port

LITELLM = ROOT / ".venv-bench" / "bin" / "litellm"
LEVELS = (1, 10, 64, 256)
BENCH_KEY = "sk-bench-0123456789"


def start(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def load(url: str, concurrency: int, seconds: float, stream: bool, api_key: str | None = None) -> dict[str, Any]:
    argv = (
        [
            sys.executable,
            str(ROOT / "benchmarks" / "load.py"),
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
        ]
        + (["--stream"] if stream else [])
        + (["--api-key", api_key] if api_key else [])
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): the cost of a request without the machine's noise."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def litellm_version() -> str:
    if not (ROOT / ".venv-bench" / "bin" / "python").exists():
        return "not installed"
    result = subprocess.run(
        [
            str(ROOT / ".venv-bench" / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "not installed"


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another checkout's root (e.g. `git worktree add /tmp/base main`): its orchestrator joins the run",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    ports = {k: free_port() for k in ("backend", "sdc", "sdc-keys", "litellm")}
    tmp = Path(tempfile.mkdtemp(prefix="sdc-bench-"))
    procs = [start([sys.executable, str(ROOT / "benchmarks" / "fast_backend.py"), "--port", str(ports["backend"])])]
    backend = f"http://127.0.0.1:{ports['backend']}"
    procs.append(
        start(
            [sys.executable, "-m", "sdc_orchestrator", "--port", str(ports["sdc"])],
            env={
                "LLM_SERVICE_TYPE": "vllm",
                "VLLM_HOST": "127.0.0.1",
                "VLLM_PORT": str(ports["backend"]),
                "LLM_MODEL_NAME": "fake",
                "LLM_FALLBACK": "none",
                "SDC_DATA_DIR": str(tmp / "data"),
            },
            log=tmp / "sdc.log",
        )
    )
    # Keys and limits on, as the chart runs it; the limits are far above the load, so what is measured
    # is their cost, not their refusals.
    keys = tmp / "keys"
    keys.write_text(f"bench:sha256:{hashlib.sha256(BENCH_KEY.encode()).hexdigest()}\n")
    procs.append(
        start(
            [sys.executable, "-m", "sdc_orchestrator", "--port", str(ports["sdc-keys"])],
            env={
                "LLM_SERVICE_TYPE": "vllm",
                "VLLM_HOST": "127.0.0.1",
                "VLLM_PORT": str(ports["backend"]),
                "LLM_MODEL_NAME": "fake",
                "LLM_FALLBACK": "none",
                "SDC_DATA_DIR": str(tmp / "data-keys"),
                "SDC_API_KEYS_FILE": str(keys),
                "SDC_RATE_LIMIT_RPM": "100000000",
                "SDC_MAX_CONCURRENT_PER_KEY": "100000",
            },
            log=tmp / "sdc-keys.log",
        )
    )
    if args.baseline_src:
        ports["baseline"] = free_port()
        procs.append(
            start(
                [sys.executable, "-m", "sdc_orchestrator", "--port", str(ports["baseline"])],
                env={
                    "PYTHONPATH": str(args.baseline_src / "orchestrator"),
                    "LLM_SERVICE_TYPE": "vllm",
                    "VLLM_HOST": "127.0.0.1",
                    "VLLM_PORT": str(ports["backend"]),
                    "LLM_MODEL_NAME": "fake",
                    "LLM_FALLBACK": "none",
                    "SDC_DATA_DIR": str(tmp / "data-baseline"),
                },
                log=tmp / "baseline.log",
            )
        )
    targets: dict[str, tuple[str, str | None]] = {
        "direct (the limit)": (f"{backend}/v1/chat/completions", None),
        "sdc-orchestrator": (f"http://127.0.0.1:{ports['sdc']}/v1/chat/completions", None),
        "sdc-orchestrator, keys + limits": (f"http://127.0.0.1:{ports['sdc-keys']}/v1/chat/completions", BENCH_KEY),
    }
    if args.baseline_src:
        targets["sdc-orchestrator, baseline"] = (f"http://127.0.0.1:{ports['baseline']}/v1/chat/completions", None)
    if LITELLM.exists():
        config = tmp / "litellm.yaml"
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": "fake",
                            "litellm_params": {"model": "openai/fake", "api_base": f"{backend}/v1", "api_key": "none"},
                        }
                    ],
                    "litellm_settings": {"telemetry": False},
                }
            )
        )
        procs.append(
            start(
                [str(LITELLM), "--config", str(config), "--port", str(ports["litellm"]), "--num_workers", "1"],
                env={
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_TELEMETRY": "False",
                    # No auth on either proxy: what is compared is the cost of routing a request.
                    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                },
                log=tmp / "litellm.log",
            )
        )
        targets["LiteLLM proxy"] = (f"http://127.0.0.1:{ports['litellm']}/v1/chat/completions", None)
    # Which process serves each target (the load generator is a process of its own).
    pids = {name: proc.pid for name, proc in zip(targets, procs, strict=False)}
    rows: list[list[Any]] = []
    try:
        wait_up(f"{backend}/v1/models")
        wait_up(f"http://127.0.0.1:{ports['sdc']}/healthz")
        wait_up(f"http://127.0.0.1:{ports['sdc-keys']}/healthz")
        if args.baseline_src:
            wait_up(f"http://127.0.0.1:{ports['baseline']}/healthz")
        if "LiteLLM proxy" in targets:
            wait_up(f"http://127.0.0.1:{ports['litellm']}/health/liveliness", timeout=240)
        for url, key in targets.values():  # warm-up: connection pools, imports, JIT-free caches
            load(url, 4, 2, False, key)
            load(url, 4, 2, True, key)
        for stream in (False, True):
            for level in levels:
                results, cpu = {}, {}
                for name, (url, key) in targets.items():
                    pid = pids.get(name)
                    before = cpu_seconds(pid) if pid else 0.0
                    results[name] = load(url, level, args.seconds, stream, key)
                    cpu[name] = cpu_seconds(pid) - before if pid else float("nan")
                base = results["direct (the limit)"]
                base_rps = base["requests"] / base["seconds"]
                base_p50, base_p99 = median(base["latencies"]), percentile(base["latencies"], 99)
                base_ttft = median(base["ttfts"]) if stream else 0.0
                for name, r in results.items():
                    rps = r["requests"] / r["seconds"]
                    p50, p99 = median(r["latencies"]), percentile(r["latencies"], 99)
                    ttft = median(r["ttfts"]) if stream else float("nan")
                    rows.append(
                        [
                            "stream" if stream else "plain",
                            level,
                            name,
                            rps,
                            rps / base_rps,
                            p50 * 1000,
                            (p50 - base_p50) * 1000,
                            (p99 - base_p99) * 1000,
                            (ttft - base_ttft) * 1000 if stream else "-",
                            cpu[name] * 1000 / max(1, r["requests"]),
                            r["errors"],
                        ]
                    )
                    print(rows[-1], flush=True)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    text = "\n".join(
        [
            "## Orchestrator overhead",
            "",
            f"Machine: {machine()}. {versions('fastapi', 'uvicorn', 'httpx', 'aiohttp')}; LiteLLM {litellm_version()}.",
            f"Backend: benchmarks/fast_backend.py (raw asyncio, fixed 6-token answer). Load: benchmarks/load.py "
            f"(aiohttp, separate process), {args.seconds:.0f} s per cell, targets interleaved per level. All servers "
            "single-process. Added = target minus direct at the same level and mode.",
            f"Command: `python benchmarks/orchestrator_overhead.py --seconds {args.seconds:.0f} --levels {args.levels}`",
            "",
            table(
                [
                    "mode",
                    "concurrency",
                    "target",
                    "req/s",
                    "ratio to direct",
                    "p50 (ms)",
                    "added p50 (ms)",
                    "added p99 (ms)",
                    "added TTFT p50 (ms)",
                    "server CPU per request (ms)",
                    "errors",
                ],
                rows,
            ),
            "",
        ]
    )
    print(text)
    write_report("orchestrator", text)
    return text


if __name__ == "__main__":
    main()
