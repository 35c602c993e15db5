"""`make bench`: every benchmark in turn, then one markdown report (benchmarks/REPORT.md).

Each script also runs alone (see its docstring). They run one after another,
never together: on two cores, parallel benchmarks would measure each other.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
SCRIPTS = [
    ("runtime", ["benchmarks/runtime_bench.py"]),
    ("runtime_steps", ["benchmarks/runtime_steps.py"]),
    ("orchestrator", ["benchmarks/orchestrator_overhead.py"]),
    ("failover", ["benchmarks/failover_load.py", "--concurrency", "32", "--seconds", "60"]),
    ("operator", ["benchmarks/operator_scale.py"]),
    ("faults", ["benchmarks/fault_suite.py"]),
    ("retrieval", ["benchmarks/retrieval_eval.py"]),
    ("routing", ["benchmarks/engine_sim.py"]),
    ("route_decision", ["benchmarks/route_decision.py"]),
    # On the local cluster's real node (`python hack/cluster.py up`, SDC_CLUSTER_AUDIT=1 to count API writes);
    # each says so and skips when it is not up.
    ("scale_from_zero", ["benchmarks/scale_from_zero.py", "transformers", "vllm", "ollama"]),
    ("scale_down_drain", ["benchmarks/scale_down_drain.py"]),
    ("vllm_prefix_real", ["benchmarks/vllm_prefix_real.py", "--kv-blocks", "96"]),
    # No cluster: vllm_prefix_real's ceiling and floor computed offline, and the policies in a vLLM-like simulation.
    ("vllm_prefix_ceiling", ["benchmarks/vllm_prefix_ceiling.py"]),
]


def main() -> int:
    selected = sys.argv[1:] or [name for name, _ in SCRIPTS]
    failed = []
    for name, argv in SCRIPTS:
        if name not in selected:
            continue
        print(f"\n==> {name}: python {' '.join(argv)}", flush=True)
        started = time.monotonic()
        if subprocess.run([sys.executable, *argv], cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
        print(f"    ({time.monotonic() - started:.0f}s)", flush=True)
    parts = [
        "# Benchmark report",
        "",
        "Written by `make bench` (benchmarks/run.py); each section says how to rerun it.",
        "",
    ]
    for name, _ in SCRIPTS:
        path = OUT / f"{name}.md"
        if path.exists():
            parts.append(path.read_text())
    (ROOT / "benchmarks" / "REPORT.md").write_text("\n".join(parts))
    print(f"\nreport: {ROOT / 'benchmarks' / 'REPORT.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
