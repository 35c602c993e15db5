"""sdc-runtime: one stream against in-process `generate`, aggregate throughput, and a short request's wait.

Three questions, side by side in one run on the same model:
- the single-stream limit: the same model's `generate` called directly in one
  process, no HTTP, no scheduler; sdc-runtime at 1 stream should be close to it;
- aggregate tokens/s at 1, 4, 16 and 64 concurrent streams (continuous
  batching should scale with the number of rows while a step stays cheap);
- a short request (16 tokens) sent while 8 long ones (256 tokens) decode: its
  time to first token and its total time, against the long batch's time (a
  static batcher makes it wait for the whole batch).
All requests are greedy with `ignore_eos`, so each produces exactly its token budget.

Run: `python benchmarks/runtime_bench.py` (part of `make bench`).
`--runtime-src DIR` serves the runtime from another checkout's `runtime/` (e.g. `git archive main`)
to measure a before/after pair with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, table, versions, write_report
from tests.support.servers import runtime_process

MAX_TOKENS = 64
PROMPT = [{"role": "user", "content": "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스하는 방법을 설명해 주세요."}]
CONCURRENCY = (1, 4, 16, 64)
ROUNDS = 3
LONG_TOKENS, LONG_ROWS, SHORT_TOKENS = 256, 8, 16


def in_process(model_dir: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    ids: Any = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    best = 0.0
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        for _ in range(ROUNDS):
            started = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, do_sample=False)
            elapsed = time.perf_counter() - started
            produced = out.shape[-1] - ids["input_ids"].shape[-1]
            best = max(best, produced / elapsed)
    return best


def _body(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


async def one_request(client: httpx.AsyncClient, base: str) -> int:
    resp = await client.post(f"{base}/v1/chat/completions", json=_body(MAX_TOKENS))
    resp.raise_for_status()
    return int(resp.json()["usage"]["completion_tokens"])


async def streamed(
    client: httpx.AsyncClient, base: str, max_tokens: int, first: asyncio.Event | None = None
) -> tuple[float, float]:
    """(seconds to the first content chunk, seconds to the end) of one streamed request."""
    started = time.perf_counter()
    ttft = float("nan")
    async with client.stream("POST", f"{base}/v1/chat/completions", json=_body(max_tokens, stream=True)) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if ttft != ttft and choices[0].get("delta", {}).get("content"):
                ttft = time.perf_counter() - started
                if first is not None:
                    first.set()
    return ttft, time.perf_counter() - started


async def throughput(base: str) -> dict[int, float]:
    results: dict[int, float] = {}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=128)) as client:
        await one_request(client, base)  # warm-up
        for n in CONCURRENCY:
            best = 0.0
            for _ in range(ROUNDS):
                started = time.perf_counter()
                tokens = await asyncio.gather(*(one_request(client, base) for _ in range(n)))
                best = max(best, sum(tokens) / (time.perf_counter() - started))
            results[n] = best
    return results


async def short_during_long(base: str) -> dict[str, float]:
    """Best of ROUNDS: the short request's TTFT and total, and the long batch's total."""
    best: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=32)) as client:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            firsts = [asyncio.Event() for _ in range(LONG_ROWS)]
            longs = [asyncio.create_task(streamed(client, base, LONG_TOKENS, ev)) for ev in firsts]
            await asyncio.gather(*(ev.wait() for ev in firsts))  # all eight are decoding
            ttft, short_total = await streamed(client, base, SHORT_TOKENS)
            await asyncio.gather(*longs)
            long_total = time.perf_counter() - started
            if not best or short_total / long_total < best["ratio"]:
                best = {"short_ttft": ttft, "short_total": short_total, "long_total": long_total}
                best["ratio"] = short_total / long_total
    return best


def measure(model_dir: Path, runtime_src: Path | None) -> tuple[dict[int, float], dict[str, float]]:
    env_before = dict(os.environ)
    if runtime_src is not None:  # the server subprocess imports sdc_runtime from there
        os.environ["PYTHONPATH"] = os.pathsep.join([str(runtime_src / "runtime"), os.environ.get("PYTHONPATH", "")])
    os.environ["SDC_RUNTIME_MAX_BATCH"] = str(max(CONCURRENCY))
    try:
        with runtime_process(model_dir, "bench", timeout=300) as base:
            served = asyncio.run(throughput(base))
            waits = asyncio.run(short_during_long(base))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return served, waits


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-src", type=Path, default=None, help="serve sdc_runtime from DIR/runtime")
    parser.add_argument("--label", default="sdc-runtime")
    parser.add_argument("--out", default="runtime", help="name of the report section file")
    args = parser.parse_args()
    from sdc_runtime.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        served, waits = measure(model_dir, args.runtime_src)
        direct = in_process(model_dir)
    rows: list[list[object]] = [["in-process generate (the single-stream limit)", 1, direct, 1.0, ""]]
    rows += [
        [f"{args.label} over HTTP, {n} concurrent", n, tps, tps / direct, f"{tps / served[1]:.2f}x"]
        for n, tps in served.items()
    ]
    wait_rows = [
        [
            f"{args.label}",
            f"{waits['long_total']:.2f}",
            f"{waits['short_ttft'] * 1000:.0f}",
            f"{waits['short_total']:.2f}",
            f"{waits['ratio']:.3f}",
        ]
    ]
    text = "\n".join(
        [
            "## sdc-runtime throughput",
            "",
            f"Machine: {machine()}. {versions('torch', 'transformers')}.",
            f"Model: random-weight Llama, hidden 256, 4 layers (made on the spot), greedy, {MAX_TOKENS} tokens per request "
            f"(ignore_eos), best of {ROUNDS} rounds, server --max-batch {max(CONCURRENCY)}. CPU only.",
            "Command: `python benchmarks/runtime_bench.py`",
            "",
            table(["path", "concurrency", "tokens/s (aggregate)", "ratio to in-process", "vs 1 stream"], rows),
            "",
            f"A short request ({SHORT_TOKENS} tokens, streamed) sent once {LONG_ROWS} long ones ({LONG_TOKENS} tokens) "
            "are all decoding (best of rounds by short/long ratio):",
            "",
            table(["server", "long batch (s)", "short TTFT (ms)", "short total (s)", "short / long"], wait_rows),
            "",
        ]
    )
    print(text)
    write_report(args.out, text)
    return text


if __name__ == "__main__":
    main()
