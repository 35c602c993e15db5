"""sdc-runtime's decode step in process: what one step costs at 1 and 16 rows, and the ceiling that sets.

The mixed-length figure of `runtime_bench.py` (16 clients against 1) cannot exceed what the decode
step allows: 16 rows give 16 tokens per step where one row gives 1, so the ratio is at most
`16 x step(1 row) / step(16 rows)`, before joins, HTTP and the client take their share. This measures
those steps on the bench's model (random Llama, hidden 256, 4 layers), on the scheduler's own `Batch`,
with no server and no client, for two layouts of the cache:

- `fixed`: rows that started together with one prompt and decode 64 tokens (the fixed-length figure):
  the cache grows from the prompt's ~75 columns to ~140, no padding;
- `mixed`: rows of different ages as churn leaves them (the mixed-length figure): requests of
  16-256 tokens make the longest row's history ~250-300 columns, and the younger rows are padded to it;
  beside it, 16 rows holding the same real cells with no padding (what a ragged layout could save).

It also times a prompt's prefill alone (the 1-client case, once per request) and a join into the
slots of rows that ended (the 16-client case), and gives the mixed ceiling with each request's prefill
spread over its answer's tokens.

Times are this thread's CPU time (`time.thread_time`: the batch runs in it), which other processes'
load moves far less than the wall clock; layouts alternate within each round, and figures are medians
over rounds. Run: `python benchmarks/runtime_steps.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as runtime_bench.py: one torch thread
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, median, table, versions, write_report

PROMPT = "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스하는 방법을 설명해 주세요."
# Ages (tokens generated so far) of the rows of a churned 16-row batch: requests of 16..256 tokens,
# caught at various points; the oldest sets the cache's width.
MIXED_AGES = (230, 200, 180, 150, 120, 100, 90, 70, 60, 45, 40, 30, 20, 12, 6, 2)
MIXED_TOKENS = (16, 32, 64, 128, 256)  # runtime_bench.py's answer lengths
# 16 rows of one age holding as many real cells as MIXED_AGES (ages 85 on average), with no padding:
# what the mixed step would cost if the cache paid for no padding.
UNPADDED = "mixed's real cells unpadded, 16 rows (age 85)"


class Steps:
    """A `Batch` over the bench's model, fed rows directly (no scheduler thread, no HTTP)."""

    def __init__(self, model_dir: Path) -> None:
        from sdc_runtime.engine import Engine

        self.engine = Engine(model_dir, max_batch=64, prefix_cache_tokens=0)
        self.engine.load()
        self.loop = asyncio.new_event_loop()  # outboxes need one; nothing awaits them here
        self.serial = 0

    def rows(self, n: int) -> list[Any]:
        from sdc_runtime.detok import Detokenizer, StopMatcher
        from sdc_runtime.outbox import Outbox
        from sdc_runtime.request import Row
        from sdc_runtime.sampling import SamplingParams

        made = []
        for _ in range(n):
            self.serial += 1
            ids = self.engine.chat_prompt([{"role": "user", "content": f"요청 {self.serial}: {PROMPT}"}])
            params = SamplingParams(temperature=0, max_tokens=10**6, ignore_eos=True)
            made.append(
                Row(ids, params, Outbox(self.loop), Detokenizer(self.engine.tokenizer), StopMatcher(()), streamed=False)
            )
        return made

    def batch(self, ages: tuple[int, ...]) -> Any:
        """A batch whose rows have generated `ages` tokens each (oldest first), joined as churn joins them."""
        batch = self.engine._new_batch()
        ordered = sorted(ages, reverse=True)
        batch.admit(self.rows(1))
        for i, age in enumerate(ordered):
            following = ordered[i + 1] if i + 1 < len(ordered) else 0
            for _ in range(age - following):
                batch.step()
            if i + 1 < len(ordered):
                batch.admit(self.rows(1))
        return batch

    def step_ms(self, ages: tuple[int, ...], steps: int) -> tuple[float, float]:
        """(ms per step over `steps` steps, real share of the cache's cells) for a batch of rows aged `ages`."""
        import torch

        with torch.inference_mode():
            batch = self.batch(ages)
            real = float(batch.mask.float().mean())
            started = time.thread_time()
            for _ in range(steps):
                batch.step()
            return (time.thread_time() - started) * 1000 / steps, real

    def join_ms(self, rows: int, into: tuple[int, ...] = MIXED_AGES) -> float:
        """One join of `rows` newcomers (prefill, first token, placement) into a batch of rows aged `into`.

        As under churn, the newcomers take the slots of as many rows that just ended (the oldest ones).
        """
        import torch

        with torch.inference_mode():
            batch = self.batch(into) if into else self.engine._new_batch()
            for row in batch.rows[:rows] if into else []:
                batch._finish(row, "length")
            newcomers = self.rows(rows)
            started = time.thread_time()
            batch.admit(newcomers)
            return (time.thread_time() - started) * 1000


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch
    from sdc_runtime.tiny import make_tiny_model

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    layouts: dict[str, tuple[int, ...]] = {
        "fixed, 1 row": (0,),
        "fixed, 16 rows": (0,) * 16,
        "mixed, 1 row (age 120)": (120,),
        "mixed, 16 rows": MIXED_AGES,
        UNPADDED: (85,) * 16,
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        steps = Steps(model_dir)
        load_before = os.getloadavg()[0]
        figures: dict[str, list[float]] = {name: [] for name in layouts}
        real: dict[str, float] = {}
        joins: dict[int, list[float]] = {1: [], 2: []}
        alone: list[float] = []
        for _ in range(max(1, args.rounds)):
            for name, ages in layouts.items():
                ms, real[name] = steps.step_ms(ages, 64)
                figures[name].append(ms)
            for n in joins:
                joins[n].append(steps.join_ms(n))
            alone.append(steps.join_ms(1, into=()))
        load_after = os.getloadavg()[0]
    step = {name: median(values) for name, values in figures.items()}
    rows = [[name, f"{step[name]:.2f}", f"{real[name] * 100:.0f} %"] for name in layouts]
    fixed = 16 * step["fixed, 1 row"] / step["fixed, 16 rows"]
    mixed = 16 * step["mixed, 1 row (age 120)"] / step["mixed, 16 rows"]
    unpadded = 16 * step["mixed, 1 row (age 120)"] / step[UNPADDED]
    # With prefill (mixed: every prompt distinct): each request's prompt is prefilled once, alone at 1
    # client, joining the batch at 16; spread over the answer's tokens (99 on average).
    mean = sum(MIXED_TOKENS) / len(MIXED_TOKENS)
    first, join = median(alone), median(joins[2]) / 2
    mixed_all = (step["mixed, 1 row (age 120)"] + first / mean) / (step["mixed, 16 rows"] / 16 + join / mean)
    unpadded_all = (step["mixed, 1 row (age 120)"] + first / mean) / (step[UNPADDED] / 16 + join / mean)
    text = "\n".join(
        [
            "## sdc-runtime's decode step in process (the ceiling of the mixed-length figure)",
            "",
            f"Machine: {machine()}. {versions('torch', 'transformers')}. The bench's model (random Llama, hidden 256, "
            f"4 layers), OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, the scheduler's `Batch` driven directly (no "
            f"server, no client); CPU ms of the thread, medians of {args.rounds} rounds; load average (1 min) "
            f"{load_before:.1f} at the start, {load_after:.1f} at the end. Command: `python benchmarks/runtime_steps.py`",
            "",
            table(["layout", "ms per step", "real cells"], rows),
            "",
            f"Prefill of one prompt alone {first:.1f} ms; a join into ended slots of a 16-row batch: 1 newcomer "
            f"{median(joins[1]):.1f} ms, 2 newcomers {median(joins[2]):.1f} ms.",
            "",
            f"Ceiling of 16 vs 1 from the steps alone (16 x step(1 row) / step(16 rows)): fixed {fixed:.2f}x, mixed "
            f"{mixed:.2f}x; mixed with no padding (the same real cells, unpadded) {unpadded:.2f}x. With each request's "
            f"prefill spread over its answer's tokens (99 on average), 16 rows live at every step, no HTTP and no "
            f"client: mixed {mixed_all:.2f}x, and {unpadded_all:.2f}x with no padding as well.",
            "",
        ]
    )
    print(text)
    write_report("runtime_steps", text)
    return text


if __name__ == "__main__":
    main()
