"""Kill the primary backend in the middle of a load run and count what the clients saw.

Every piece is its own process on loopback: two OpenAI-compatible fake backends
(the primary as `vllm`, the fallback standing in for Gemini's endpoint), the
orchestrator (`sdc-orchestrator` with the seed's variables), and this load
generator. After KILL_AT seconds the primary gets SIGKILL. Every request must
end in an answer or a clear JSON error; "no answer" (a dropped connection or
a client timeout) is the failure this run exists to catch.
Run: `python benchmarks/failover_load.py [--concurrency 32] [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, percentile, table, write_report
from tests.support.servers import free_port


def start(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def run_load(
    base: str, concurrency: int, seconds: float, kill_at: float, primary: subprocess.Popen[bytes]
) -> tuple[Counter[str], list[float], float]:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    killed_at = 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                resp = await client.post(f"{base}/api/v1/chat", json={"message": "안녕하세요", "provider": "vllm"})
            except httpx.HTTPError as err:
                outcomes[f"no answer ({type(err).__name__})"] += 1
                continue
            latencies.append(time.monotonic() - started)
            if resp.status_code == 200:
                outcomes[f"answered by {resp.json()['provider']}"] += 1
            elif resp.headers.get("content-type", "").startswith("application/json") and "error" in resp.json():
                outcomes[f"clear error {resp.status_code}"] += 1
            else:
                outcomes[f"unclear {resp.status_code}"] += 1

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(kill_at)
        primary.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        begin = time.monotonic()
        await asyncio.gather(killer(), *(worker(client) for _ in range(concurrency)))
    return outcomes, latencies, killed_at - begin


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    kill_at = args.seconds / 3
    ports = {name: free_port() for name in ("primary", "fallback", "orchestrator")}
    py = sys.executable
    primary = start(
        [py, "-m", "tests.support.fake_openai", "--port", str(ports["primary"]), "--model", "gemma", "--delay", "0.02"]
    )
    fallback = start(
        [
            py,
            "-m",
            "tests.support.fake_openai",
            "--port",
            str(ports["fallback"]),
            "--model",
            "gemini-2.0-flash",
            "--delay",
            "0.02",
        ]
    )
    data_dir = Path(tempfile.mkdtemp(prefix="sdc-failover-"))
    orchestrator = start(
        [py, "-m", "sdc_orchestrator", "--port", str(ports["orchestrator"])],
        env={
            "LLM_SERVICE_TYPE": "vllm",
            "VLLM_HOST": "127.0.0.1",
            "VLLM_PORT": str(ports["primary"]),
            "GEMINI_API_KEY": "bench-key",
            "GEMINI_BASE_URL": f"http://127.0.0.1:{ports['fallback']}/v1",
            "SDC_DATA_DIR": str(data_dir),
            "SDC_ATTEMPT_TIMEOUT_S": "5",
            "SDC_TOTAL_TIMEOUT_S": "20",
        },
        log=data_dir / "orchestrator.log",
    )
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/healthz")
        outcomes, latencies, killed = asyncio.run(
            run_load(f"http://127.0.0.1:{ports['orchestrator']}", args.concurrency, args.seconds, kill_at, primary)
        )
    finally:
        for proc in (primary, fallback, orchestrator):
            proc.terminate()
            proc.wait(timeout=10)
    total = sum(outcomes.values())
    rows = [[kind, count, f"{100 * count / total:.2f}%"] for kind, count in sorted(outcomes.items())]
    no_answer = sum(c for k, c in outcomes.items() if k.startswith(("no answer", "unclear")))
    text = "\n".join(
        [
            "## Failover under load: primary killed mid-run",
            "",
            f"Machine: {machine()}.",
            f"Load: {args.concurrency} concurrent clients for {args.seconds:.0f} s against `POST /api/v1/chat` "
            f"(provider vllm); the primary got SIGKILL at t={killed:.1f} s; fallback LLM_FALLBACK=gemini (default).",
            f"Command: `python benchmarks/failover_load.py --concurrency {args.concurrency} --seconds {args.seconds:.0f}`",
            "",
            table(["outcome", "requests", "share"], rows),
            "",
            f"Total {total}; without an answer: {no_answer}. Latency p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms.",
            "",
        ]
    )
    print(text)
    print(f"orchestrator log: {data_dir / 'orchestrator.log'}")
    write_report("failover", text)
    return text


if __name__ == "__main__":
    main()
