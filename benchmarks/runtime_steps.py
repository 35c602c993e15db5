"""sdc-runtime's decode step in process: what one step costs at 1 and 16 rows, and the ceiling that sets.

The mixed-length figure of `runtime_bench.py` (16 clients against 1) cannot exceed what the decode
step allows: 16 rows give 16 tokens per step where one row gives 1, so the ratio is at most
`16 x step(1 row) / step(16 rows)`, before joins, HTTP and the client take their share. This measures
those steps on the bench's model (random Llama, hidden 256, 4 layers), on the scheduler's own `Batch`,
with no server and no client, for two layouts of the cache:

- `fixed`: rows that started together with one prompt and decode 64 tokens (the fixed-length figure):
  the cache grows from the prompt's ~30 columns to ~94, no padding;
- `mixed`: rows of different ages as churn leaves them (the mixed-length figure): requests of
  16-256 tokens make the longest row's history ~250-300 columns, and the younger rows are padded to it.

Layouts alternate within each round, so a change of the shared machine's load touches them alike;
figures are medians over rounds. Run: `python benchmarks/runtime_steps.py`.
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
from benchmarks.common import median, table

PROMPT = "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스하는 방법을 설명해 주세요."
# Ages (tokens generated so far) of the rows of a churned 16-row batch: requests of 16..256 tokens,
# caught at various points; the oldest sets the cache's width.
MIXED_AGES = (230, 200, 180, 150, 120, 100, 90, 70, 60, 45, 40, 30, 20, 12, 6, 2)


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
            started = time.perf_counter()
            for _ in range(steps):
                batch.step()
            return (time.perf_counter() - started) * 1000 / steps, real

    def join_ms(self, rows: int) -> float:
        """One join of `rows` newcomers into a 15-row mixed batch (prefill, first token, placement)."""
        import torch

        with torch.inference_mode():
            batch = self.batch(MIXED_AGES[:15])
            newcomers = self.rows(rows)
            started = time.perf_counter()
            batch.admit(newcomers)
            return (time.perf_counter() - started) * 1000


def main() -> None:
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
        "same real cells unpadded, 16 rows (age 85)": (85,) * 16,
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "bench-model", hidden_size=256, layers=4, max_positions=1024)
        steps = Steps(model_dir)
        load_before = os.getloadavg()[0]
        figures: dict[str, list[float]] = {name: [] for name in layouts}
        real: dict[str, float] = {}
        joins: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(max(1, args.rounds)):
            for name, ages in layouts.items():
                ms, real[name] = steps.step_ms(ages, 64)
                figures[name].append(ms)
            for n in joins:
                joins[n].append(steps.join_ms(n))
        load_after = os.getloadavg()[0]
    step = {name: median(values) for name, values in figures.items()}
    rows = [[name, f"{step[name]:.2f}", f"{real[name] * 100:.0f} %"] for name in layouts]
    fixed = 16 * step["fixed, 1 row"] / step["fixed, 16 rows"]
    mixed = 16 * step["mixed, 1 row (age 120)"] / step["mixed, 16 rows"]
    print(f"load average (1 min) {load_before:.1f} -> {load_after:.1f}; medians of {args.rounds} rounds\n")
    print(table(["layout", "ms per step", "real cells"], rows))
    print(
        f"\nceiling of 16 vs 1 from steps alone: fixed {fixed:.2f}x, mixed {mixed:.2f}x "
        "(16 x step(1) / step(16); joins, HTTP and the client come on top)"
    )
    print(
        f"join of 1 newcomer {median(joins[1]):.1f} ms, of 2 {median(joins[2]):.1f} ms "
        "(prefill of ~30 prompt tokens each, first token, placement into a 15-row batch)"
    )


if __name__ == "__main__":
    main()
