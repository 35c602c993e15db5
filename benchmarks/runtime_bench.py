"""sdc-runtime throughput: single stream against in-process `generate`, and aggregate under concurrency.

The peer is the physical limit for this runtime: the same model's `generate`
called directly in one process, no HTTP, no batching scheduler. Both use greedy
decoding and `ignore_eos`, so every request produces exactly MAX_TOKENS tokens.
Run: `python benchmarks/runtime_bench.py` (part of `make bench`).
"""

from __future__ import annotations

import asyncio
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
CONCURRENCY = (1, 4, 16)
ROUNDS = 3


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


async def one_request(client: httpx.AsyncClient, base: str) -> int:
    resp = await client.post(
        f"{base}/v1/chat/completions",
        json={"model": "bench", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True},
    )
    resp.raise_for_status()
    return int(resp.json()["usage"]["completion_tokens"])


async def through_runtime(base: str) -> dict[int, float]:
    results: dict[int, float] = {}
    async with httpx.AsyncClient(timeout=300) as client:
        await one_request(client, base)  # warm-up
        for n in CONCURRENCY:
            best = 0.0
            for _ in range(ROUNDS):
                started = time.perf_counter()
                tokens = await asyncio.gather(*(one_request(client, base) for _ in range(n)))
                best = max(best, sum(tokens) / (time.perf_counter() - started))
            results[n] = best
    return results


def main() -> str:
    from sdc_runtime.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        with runtime_process(model_dir, "bench", timeout=300) as base:
            served = asyncio.run(through_runtime(base))
        direct = in_process(model_dir)
    rows = [["in-process generate (the limit)", 1, direct, 1.0]]
    rows += [[f"sdc-runtime over HTTP, {n} concurrent", n, tps, tps / direct] for n, tps in served.items()]
    text = "\n".join(
        [
            "## sdc-runtime throughput",
            "",
            f"Machine: {machine()}. {versions('torch', 'transformers')}.",
            f"Model: random-weight Llama, hidden 256, 4 layers (made on the spot), greedy, {MAX_TOKENS} tokens per request "
            f"(ignore_eos), best of {ROUNDS} rounds. CPU only.",
            "Command: `python benchmarks/runtime_bench.py`",
            "",
            table(["path", "concurrency", "tokens/s (aggregate)", "ratio to in-process"], rows),
            "",
        ]
    )
    print(text)
    write_report("runtime", text)
    return text


if __name__ == "__main__":
    main()
