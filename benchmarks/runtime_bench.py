"""sdc-runtime: one stream against in-process `generate`, aggregate throughput, and a short request's wait.

Three questions, side by side in one run on the same model:
- the single-stream limit: the same model's `generate` called directly in one
  process, no HTTP, no scheduler; sdc-runtime at 1 stream should be within 5 %
  of it. The two are measured in interleaved pairs (alternating which goes
  first) so that both see the same minute of a shared machine's load; the ratio
  is the median of the pairs' ratios, and each side's figure is its median;
- aggregate tokens/s at 1, 4, 16 and 64 concurrent streams (continuous
  batching should scale with the number of rows while a step stays cheap);
- a short request (16 tokens) sent while 8 long ones (256 tokens) decode: its
  time to first token and its total time, against the long batch's time (a
  static batcher makes it wait for the whole batch).
Both sides of the single-stream pair run the same prompt ids, greedy, exactly MAX_TOKENS new tokens
(`ignore_eos` on the server; no end-of-sequence token for `generate`, with nothing else added to its
loop), after a warm-up. All requests use `ignore_eos`, so each produces exactly its token budget;
throughput requests are greedy, streamed ones sample (see `_body`).

Run: `python benchmarks/runtime_bench.py` (part of `make bench`).
`--runtime-src DIR` serves the runtime from another checkout's `runtime/` (e.g. `git archive main`)
to measure a before/after pair with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# One torch thread for the server and the in-process peer alike: on a shared 2-core machine, torch's
# spinning worker threads lose far more to contention than they gain (set it to override).
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, median, table, versions, write_report
from tests.support.servers import runtime_process

MAX_TOKENS = 64
PROMPT = [{"role": "user", "content": "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스하는 방법을 설명해 주세요."}]
CONCURRENCY = (1, 4, 16, 64)
ROUNDS = 7
PAIRS = 15
LONG_TOKENS, LONG_ROWS, SHORT_TOKENS = 256, 8, 16


class InProcess:
    """The same model called directly with `generate`: the single-stream limit."""

    def __init__(self, model_dir: Path) -> None:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok: Any = AutoTokenizer.from_pretrained(model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
        model.eval()
        self.model = model
        self.inputs: Any = tok.apply_chat_template(
            PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        # Exactly MAX_TOKENS, greedy, and no end-of-sequence check: the server's `ignore_eos`
        # counterpart without a logits processor (`min_new_tokens` would add one to this side only).
        generation_config: Any = transformers.GenerationConfig
        self.config = generation_config(
            max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id
        )
        self.tokens_per_s()  # warm-up

    def tokens_per_s(self) -> float:
        import torch

        with torch.inference_mode():
            started = time.perf_counter()
            out = self.model.generate(**self.inputs, generation_config=self.config)
            elapsed = time.perf_counter() - started
        produced = int(out.shape[-1] - self.inputs["input_ids"].shape[-1])
        if produced != MAX_TOKENS:
            raise RuntimeError(f"in-process generate made {produced} tokens, not {MAX_TOKENS}")
        return produced / elapsed


def _body(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": PROMPT,
        "max_tokens": max_tokens,
        # Streamed requests sample (no seed, so a static batcher may batch them too): the random
        # model's greedy answer to this prompt is special tokens only, which stream no text, and
        # the wait scenario needs to see the long requests decoding.
        "temperature": 1.0 if stream else 0,
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
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=_body(max_tokens, stream=True)) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                # The first token: text, or the end (a random model may emit only special tokens).
                if ttft != ttft and (choice.get("delta", {}).get("content") or choice.get("finish_reason")):
                    ttft = time.perf_counter() - started
                    if first is not None:
                        first.set()
    finally:
        if first is not None:
            first.set()  # never leave the scenario waiting on a request that ended
    return ttft, time.perf_counter() - started


async def single_stream(base: str, direct: InProcess) -> dict[str, float]:
    """Interleaved pairs of in-process `generate` and one HTTP request, alternating which goes first.

    Besides wall-clock tokens/s, each side's CPU seconds per token: on a shared machine the wall clock
    of a pair swings by tens of percent with other processes' load, while CPU time shows the work
    each side does (the HTTP side counts the server process and this client).
    """
    pairs: list[tuple[float, float]] = []
    cpu_local = cpu_served = 0.0
    async with _client(1) as client:
        await one_request(client, base)  # warm-up (the in-process side warmed up when it loaded)
        for i in range(PAIRS):
            for side in ("served", "local") if i % 2 else ("local", "served"):
                own, server = time.process_time(), _children_cpu_s()
                if side == "local":
                    local = direct.tokens_per_s()
                    cpu_local += time.process_time() - own
                else:
                    served = await _timed_request(client, base)
                    cpu_served += time.process_time() - own + _children_cpu_s() - server
            pairs.append((local, served))
    tokens = PAIRS * MAX_TOKENS
    return {
        "direct": median([p[0] for p in pairs]),
        "served": median([p[1] for p in pairs]),
        "ratio": median([p[1] / p[0] for p in pairs]),
        "ratio_min": min(p[1] / p[0] for p in pairs),
        "ratio_max": max(p[1] / p[0] for p in pairs),
        "cpu_ms_direct": cpu_local / tokens * 1000,
        "cpu_ms_served": cpu_served / tokens * 1000,
    }


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children: the server (Linux /proc; 0 elsewhere)."""
    total = 0
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            for pid in (task / "children").read_text().split():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    except OSError:
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


async def _timed_request(client: httpx.AsyncClient, base: str) -> float:
    started = time.perf_counter()
    tokens = await one_request(client, base)
    elapsed = time.perf_counter() - started
    if tokens != MAX_TOKENS:
        raise RuntimeError(f"the server made {tokens} tokens, not {MAX_TOKENS}")
    return tokens / elapsed


def _client(connections: int) -> httpx.AsyncClient:
    # Idle connections expire on the client's side before uvicorn's 5 s keep-alive closes them on
    # the server's: a request sent on a connection the server is closing fails with a ReadError.
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=connections, keepalive_expiry=3))


async def throughput(base: str) -> tuple[dict[int, float], dict[int, float]]:
    """Median aggregate tokens/s of ROUNDS rounds at each concurrency.

    Every round runs each concurrency once, in turn, so a change of the machine's load between
    rounds touches every figure alike and the "vs 1 stream" ratios compare like with like. Each
    concurrency has its own client, with as many connections as it has streams: httpx's pool costs
    CPU per request in proportion to the connections it holds (on this machine 4.4 ms of client CPU
    per sequential request with 64 connections open, 1.4 ms with 16), and this client shares the
    server's two cores, so one pool that the 64-stream rounds had filled made every other round
    pay for them (9 ms per request at 16 streams).
    """
    rounds: dict[int, list[float]] = {n: [] for n in CONCURRENCY}
    async with contextlib.AsyncExitStack() as stack:
        clients = {n: await stack.enter_async_context(_client(n)) for n in CONCURRENCY}
        for n, client in clients.items():  # warm-up
            await asyncio.gather(*(one_request(client, base) for _ in range(n)))
        for _ in range(ROUNDS):
            for n, client in clients.items():
                started = time.perf_counter()
                tokens = await asyncio.gather(*(one_request(client, base) for _ in range(n)))
                rounds[n].append(sum(tokens) / (time.perf_counter() - started))
    medians = {n: median(results) for n, results in rounds.items()}
    # Each round's n-stream figure against the same round's 1 stream, seconds apart: the ratio under
    # one load, which the ratio of the medians (rounds minutes apart) is not on a shared machine.
    paired = {n: median([a / b for a, b in zip(results, rounds[1], strict=True)]) for n, results in rounds.items()}
    return medians, paired


async def short_during_long(base: str) -> dict[str, float]:
    """The median round by short/long ratio: the short request's TTFT and total, and the long batch's total."""
    rounds: list[dict[str, float]] = []
    async with _client(LONG_ROWS + 1) as client:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            firsts = [asyncio.Event() for _ in range(LONG_ROWS)]
            longs = [asyncio.create_task(streamed(client, base, LONG_TOKENS, ev)) for ev in firsts]
            await asyncio.gather(*(ev.wait() for ev in firsts))  # all eight are decoding
            ttft, short_total = await streamed(client, base, SHORT_TOKENS)
            await asyncio.gather(*longs)
            long_total = time.perf_counter() - started
            rounds.append(
                {
                    "short_ttft": ttft,
                    "short_total": short_total,
                    "long_total": long_total,
                    "ratio": short_total / long_total,
                }
            )
    return sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]


def measure(
    model_dir: Path, runtime_src: Path | None
) -> tuple[dict[str, float], tuple[dict[int, float], dict[int, float]], dict[str, float]]:
    env_before = dict(os.environ)
    if runtime_src is not None:  # the server subprocess imports sdc_runtime from there
        os.environ["PYTHONPATH"] = os.pathsep.join([str(runtime_src / "runtime"), os.environ.get("PYTHONPATH", "")])
    os.environ["SDC_RUNTIME_MAX_BATCH"] = str(max(CONCURRENCY))
    try:
        with runtime_process(model_dir, "bench", timeout=300) as base:
            # The peer runs right beside the server (each idle while the other works), interleaved.
            single = asyncio.run(single_stream(base, InProcess(model_dir)))
            served = asyncio.run(throughput(base))
            waits = asyncio.run(short_during_long(base))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return single, served, waits


def main() -> str:
    global ROUNDS, PAIRS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-src", type=Path, default=None, help="serve sdc_runtime from DIR/runtime")
    parser.add_argument("--label", default="sdc-runtime")
    parser.add_argument("--out", default="runtime", help="name of the report section file")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per throughput and wait figure")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="interleaved single-stream pairs")
    args = parser.parse_args()
    ROUNDS, PAIRS = max(1, args.rounds), max(1, args.pairs)
    from sdc_runtime.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        load_before = os.getloadavg()
        single, (served, paired), waits = measure(model_dir, args.runtime_src)
        load_after = os.getloadavg()
    direct = single["direct"]
    rows: list[list[object]] = [["in-process generate (the single-stream limit)", 1, direct, 1.0, "", ""]]
    rows += [
        # One stream's ratio is the median of the interleaved pairs' ratios (see the module docstring).
        [
            f"{args.label} over HTTP, {n} concurrent",
            n,
            tps,
            single["ratio"] if n == 1 else tps / direct,
            f"{tps / served[1]:.2f}x",
            f"{paired[n]:.2f}x",
        ]
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
            f"(ignore_eos), server --max-batch {max(CONCURRENCY)}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}. CPU only.",
            f"Load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end "
            "(the machine is shared: other work runs meanwhile).",
            "Command: `python benchmarks/runtime_bench.py`",
            "",
            f"One stream: {PAIRS} interleaved pairs of in-process `generate` and one HTTP request (alternating which "
            f"goes first): medians in-process {single['direct']:.1f} tokens/s, over HTTP {single['served']:.1f} tokens/s; "
            f"the median of the pairs' ratios {single['ratio']:.3f} "
            f"(range {single['ratio_min']:.2f} to {single['ratio_max']:.2f}). CPU time per token over the same pairs: "
            f"in-process {single['cpu_ms_direct']:.2f} ms, over HTTP {single['cpu_ms_served']:.2f} ms (server process "
            f"and client together). Aggregate tokens/s at every concurrency (1 included): median of {ROUNDS} rounds, "
            "each round running every concurrency in turn; the 1-stream row's ratio to in-process is the paired one. "
            "`vs 1 stream (medians)` divides the medians; `within rounds` is the median of each round's figure over "
            "the same round's 1-stream figure (the two ran seconds apart, under one load).",
            "",
            table(
                [
                    "path",
                    "concurrency",
                    "tokens/s (aggregate)",
                    "ratio to in-process",
                    "vs 1 stream (medians)",
                    "vs 1 stream (within rounds)",
                ],
                rows,
            ),
            "",
            f"A short request ({SHORT_TOKENS} tokens, streamed) sent once {LONG_ROWS} long ones ({LONG_TOKENS} tokens) "
            f"are all decoding (the median of {ROUNDS} rounds by short/long ratio):",
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
