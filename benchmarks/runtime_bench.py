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
  static batcher makes it wait for the whole batch);
- throughput under churn: 1 and 16 clients sending back to back, non-streamed, each request's
  max_tokens drawn from 16/32/64/128/256 (seeded), every prompt distinct (a request number opens it,
  so no prompt block is shared and the prefix cache saves nothing: this measures joining and
  leaving, not caching); aggregate tokens/s of the requests finished within a fixed window, and of every
  token the server generated in it (its `vllm:generation_tokens_total`, unfinished answers included);
- the prefix cache: time to first token of a request with a fresh 500-token system prompt, then of
  another request with the same system prompt and another question.
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
MIXED_TOKENS, MIXED_CLIENTS, MIXED_SECONDS = (16, 32, 64, 128, 256), (1, 16), 15.0
PREFIX_TOKENS, PREFIX_TRIALS = 500, 7
SECTIONS = ("single", "throughput", "waits", "mixed", "prefix")


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
    client: httpx.AsyncClient,
    base: str,
    max_tokens: int,
    first: asyncio.Event | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[float, float]:
    """(seconds to the first content chunk, seconds to the end) of one streamed request."""
    started = time.perf_counter()
    ttft = float("nan")
    body = body or _body(max_tokens, stream=True)
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
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


async def generated_tokens(client: httpx.AsyncClient, base: str) -> float:
    """The server's `vllm:generation_tokens_total` (every token it has generated, answers unfinished included)."""
    resp = await client.get(f"{base}/metrics")
    resp.raise_for_status()
    for line in resp.text.splitlines():
        if line.startswith("vllm:generation_tokens_total{"):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("the server exports no vllm:generation_tokens_total")


Mixed = tuple[dict[int, list[float]], dict[int, list[float]], dict[int, list[float]]]


async def mixed_lengths(base: str) -> Mixed:
    """Aggregate tokens/s at 1 and 16 clients, each sending back to back; rounds alternate the two.

    Each request's max_tokens comes from a seeded draw, so both client counts see the same mix; a
    window's figure counts the completion tokens of the requests that finished inside it. That
    leaves out the tokens of the answers still running at the window's end: one answer at 1 client,
    16 at 16 clients, and the answer running at a given moment is a long one more often than not
    (a 256-token answer is running 16 times as long as a 16-token one), so the 16-client figure
    loses more (about 16 x 90 tokens a window). The server's own counter, read at the window's
    start and end, counts every token generated inside it: the second figure.
    """
    import random

    draw = random.Random(30)
    counter = iter(range(10**9))
    rounds: dict[int, list[float]] = {n: [] for n in MIXED_CLIENTS}
    # Tokens per CPU second of the server and this client: the work per token, which a shared
    # machine's load moves far less than the wall clock (it shows what batching saves).
    per_cpu: dict[int, list[float]] = {n: [] for n in MIXED_CLIENTS}
    generated: dict[int, list[float]] = {n: [] for n in MIXED_CLIENTS}

    async def window_count(client: httpx.AsyncClient, deadline: float) -> float:
        start = await generated_tokens(client, base)
        await asyncio.sleep(deadline - time.perf_counter())
        return await generated_tokens(client, base) - start

    async def client_loop(client: httpx.AsyncClient, deadline: float, done: list[int]) -> None:
        while True:
            body = _body(draw.choice(MIXED_TOKENS))
            body["messages"] = [{"role": "user", "content": f"요청 {next(counter)}: {PROMPT[0]['content']}"}]
            resp = await client.post(f"{base}/v1/chat/completions", json=body)
            resp.raise_for_status()
            if time.perf_counter() > deadline:
                return
            done.append(int(resp.json()["usage"]["completion_tokens"]))

    async with contextlib.AsyncExitStack() as stack:
        clients = {n: await stack.enter_async_context(_client(n)) for n in MIXED_CLIENTS}
        counter_client = await stack.enter_async_context(_client(1))  # not the measured clients' pools
        for _ in range(ROUNDS):
            for n, client in clients.items():
                done: list[int] = []
                started, cpu = time.perf_counter(), time.process_time() + _children_cpu_s()
                counted = asyncio.create_task(window_count(counter_client, started + MIXED_SECONDS))
                await asyncio.gather(*(client_loop(client, started + MIXED_SECONDS, done) for _ in range(n)))
                rounds[n].append(sum(done) / MIXED_SECONDS)
                per_cpu[n].append(sum(done) / max(1e-9, time.process_time() + _children_cpu_s() - cpu))
                generated[n].append(await counted / MIXED_SECONDS)
    return rounds, per_cpu, generated


def _prefix_text(tok: Any, trial: int) -> str:
    """A system prompt of PREFIX_TOKENS tokens (this model's tokenizer), different in every trial."""
    import random

    from sdc_runtime.tiny import CORPUS

    words = " ".join(CORPUS).split()
    draw = random.Random(trial)
    text = f"{trial}"
    while len(tok(text)["input_ids"]) < PREFIX_TOKENS:
        text += " " + draw.choice(words)
    return text


async def prefix_ttft(base: str, model_dir: Path) -> list[tuple[float, float, float]]:
    """(first TTFT, second TTFT, floor) per trial: a fresh 500-token system prompt, then the same with another
    question, then that question alone (no system prompt: the floor of HTTP, scheduling and one short prefill)."""
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    trials: list[tuple[float, float, float]] = []
    async with _client(1) as client:
        for trial in range(PREFIX_TRIALS + 1):  # the first trial warms up
            system = _prefix_text(tok, 1000 + trial)
            pair = []
            for question in ("서울은 어디?", "부산은 항구 도시입니까?", ""):
                body = _body(1, stream=True)
                body["messages"] = [{"role": "system", "content": system}, {"role": "user", "content": question}]
                if not question:
                    body["messages"] = [{"role": "user", "content": f"{trial} 부산은 항구 도시입니까?"}]
                ttft, _ = await streamed(client, base, 1, body=body)
                pair.append(ttft)
            if trial:
                trials.append((pair[0], pair[1], pair[2]))
    return trials


def measure(model_dir: Path, runtime_src: Path | None, sections: set[str]) -> dict[str, Any]:
    env_before = dict(os.environ)
    if runtime_src is not None:  # the server subprocess imports sdc_runtime from there
        os.environ["PYTHONPATH"] = os.pathsep.join([str(runtime_src / "runtime"), os.environ.get("PYTHONPATH", "")])
    os.environ["SDC_RUNTIME_MAX_BATCH"] = str(max(CONCURRENCY))
    found: dict[str, Any] = {}
    try:
        with runtime_process(model_dir, "bench", timeout=300) as base:
            # The peer runs right beside the server (each idle while the other works), interleaved.
            if "single" in sections:
                found["single"] = asyncio.run(single_stream(base, InProcess(model_dir)))
            if "throughput" in sections:
                found["throughput"] = asyncio.run(throughput(base))
            if "waits" in sections:
                found["waits"] = asyncio.run(short_during_long(base))
            if "mixed" in sections:
                found["mixed"] = asyncio.run(mixed_lengths(base))
            if "prefix" in sections:
                found["prefix"] = asyncio.run(prefix_ttft(base, model_dir))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return found


def main() -> str:
    global ROUNDS, PAIRS, MIXED_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-src", type=Path, default=None, help="serve sdc_runtime from DIR/runtime")
    parser.add_argument("--label", default="sdc-runtime")
    parser.add_argument("--out", default="runtime", help="name of the report section file")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per throughput and wait figure")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="interleaved single-stream pairs")
    parser.add_argument("--mixed-seconds", type=float, default=MIXED_SECONDS, help="window of a mixed-length round")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    args = parser.parse_args()
    ROUNDS, PAIRS, MIXED_SECONDS = max(1, args.rounds), max(1, args.pairs), max(1.0, args.mixed_seconds)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    from sdc_runtime.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        load_before = os.getloadavg()
        found = measure(model_dir, args.runtime_src, sections)
        load_after = os.getloadavg()
    parts = [
        "## sdc-runtime throughput",
        "",
        f"Machine: {machine()}. {versions('torch', 'transformers')}.",
        f"Model: random-weight Llama, hidden 256, 4 layers (made on the spot), greedy, {MAX_TOKENS} tokens per request "
        f"(ignore_eos), server --max-batch {max(CONCURRENCY)}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}. CPU only.",
        f"Load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end "
        "(the machine is shared: other work runs meanwhile).",
        f"Command: `python benchmarks/runtime_bench.py{'' if sections == set(SECTIONS) else ' --sections ' + args.sections}`",
        "",
    ]
    if "single" in found:
        parts += _single_text(found["single"])
    if "throughput" in found:
        parts += _throughput_text(args.label, found["throughput"], found.get("single"))
    if "waits" in found:
        parts += _waits_text(args.label, found["waits"])
    if "mixed" in found:
        parts += _mixed_text(args.label, found["mixed"])
    if "prefix" in found:
        parts += _prefix_text_report(args.label, found["prefix"])
    text = "\n".join(parts)
    print(text)
    write_report(args.out, text)
    return text


def _single_text(single: dict[str, float]) -> list[str]:
    return [
        f"One stream: {PAIRS} interleaved pairs of in-process `generate` and one HTTP request (alternating which "
        f"goes first): medians in-process {single['direct']:.1f} tokens/s, over HTTP {single['served']:.1f} tokens/s; "
        f"the median of the pairs' ratios {single['ratio']:.3f} "
        f"(range {single['ratio_min']:.2f} to {single['ratio_max']:.2f}). CPU time per token over the same pairs: "
        f"in-process {single['cpu_ms_direct']:.2f} ms, over HTTP {single['cpu_ms_served']:.2f} ms (server process "
        "and client together).",
        "",
    ]


def _throughput_text(
    label: str, result: tuple[dict[int, float], dict[int, float]], single: dict[str, float] | None
) -> list[str]:
    served, paired = result
    rows: list[list[object]] = []
    if single is not None:
        rows.append(["in-process generate (the single-stream limit)", 1, single["direct"], 1.0, "", ""])
    for n, tps in served.items():
        # One stream's ratio is the median of the interleaved pairs' ratios (see the module docstring).
        ratio: object = ""
        if single is not None:
            ratio = single["ratio"] if n == 1 else tps / single["direct"]
        rows.append(
            [f"{label} over HTTP, {n} concurrent", n, tps, ratio, f"{tps / served[1]:.2f}x", f"{paired[n]:.2f}x"]
        )
    return [
        f"Aggregate tokens/s at every concurrency (1 included), every request the same prompt and {MAX_TOKENS} "
        f"tokens: median of {ROUNDS} rounds, each round running every concurrency in turn; the 1-stream row's "
        "ratio to in-process is the paired one. `vs 1 stream (medians)` divides the medians; `within rounds` is "
        "the median of each round's figure over the same round's 1-stream figure (the two ran seconds apart, "
        "under one load).",
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
    ]


def _waits_text(label: str, waits: dict[str, float]) -> list[str]:
    row = [
        label,
        f"{waits['long_total']:.2f}",
        f"{waits['short_ttft'] * 1000:.0f}",
        f"{waits['short_total']:.2f}",
        f"{waits['ratio']:.3f}",
    ]
    return [
        f"A short request ({SHORT_TOKENS} tokens, streamed) sent once {LONG_ROWS} long ones ({LONG_TOKENS} tokens) "
        f"are all decoding (the median of {ROUNDS} rounds by short/long ratio):",
        "",
        table(["server", "long batch (s)", "short TTFT (ms)", "short total (s)", "short / long"], [row]),
        "",
    ]


def _mixed_text(label: str, result: Mixed) -> list[str]:
    rounds, per_cpu, generated = result
    one_generated = generated[MIXED_CLIENTS[0]]
    one, one_cpu = rounds[MIXED_CLIENTS[0]], per_cpu[MIXED_CLIENTS[0]]
    rows = [
        [
            f"{label}, {n} clients",
            n,
            median(figures),
            f"{median(figures) / median(one):.2f}x",
            f"{median([a / b for a, b in zip(figures, one, strict=True)]):.2f}x",
            " ".join(f"{f:.0f}" for f in figures),
            f"{median(per_cpu[n]):.0f}",
            f"{median(per_cpu[n]) / median(one_cpu):.2f}x",
            median(generated[n]),
            f"{median(generated[n]) / median(one_generated):.2f}x",
            f"{median([a / b for a, b in zip(generated[n], one_generated, strict=True)]):.2f}x",
        ]
        for n, figures in rounds.items()
    ]
    return [
        f"Mixed lengths: clients sending back to back, non-streamed, max_tokens drawn from "
        f"{'/'.join(map(str, MIXED_TOKENS))} (seeded), every prompt distinct; tokens of the requests finished "
        f"within each {MIXED_SECONDS:.0f} s window; median of {ROUNDS} rounds alternating the client counts. "
        "Tokens per CPU s divides them by the CPU seconds the server and this client spent in the window "
        "(the work per token, which other processes' load moves far less than the wall clock). Generated "
        "tokens/s reads the server's `vllm:generation_tokens_total` at each window's start and end: every token "
        "made inside the window, the answers still running at its end included (the finished-requests figure "
        "leaves out one running answer at 1 client and 16 at 16, see `mixed_lengths`):",
        "",
        table(
            [
                "server",
                "clients",
                "tokens/s (median)",
                "vs 1 client (medians)",
                "vs 1 client (within rounds)",
                "rounds",
                "tokens per CPU s",
                "vs 1 client (CPU)",
                "generated tokens/s (median)",
                "vs 1 client (medians)",
                "vs 1 client (within rounds)",
            ],
            rows,
        ),
        "",
    ]


def _prefix_text_report(label: str, trials: list[tuple[float, float, float]]) -> list[str]:
    first, second, floor = (median([t[i] for t in trials]) for i in range(3))
    ratio = median([t[0] / t[1] for t in trials])
    return [
        f"Prefix cache: a fresh {PREFIX_TOKENS}-token system prompt with one question, then the same system prompt "
        f"with another question (streamed, max_tokens 1), time to the first token; median of {len(trials)} trials, "
        "each with its own system prompt. The floor is the second question alone (a 20-token prompt): HTTP, "
        "scheduling and a short prefill, what a cache hit cannot go below.",
        "",
        table(
            ["server", "first TTFT (ms)", "second TTFT (ms)", "first / second (median of trials)", "floor (ms)"],
            [[label, f"{first * 1000:.1f}", f"{second * 1000:.1f}", f"{ratio:.1f}x", f"{floor * 1000:.1f}"]],
        ),
        "",
    ]


if __name__ == "__main__":
    main()
