"""The operator's fault suite at full length: what `make test` runs short, with the issue's sizes.

20 SIGKILLs at random moments over 100 LocalLLMs being created, edited and
deleted; the API server stopped for 10, 60 and 300 s; etcd restarted; two
replicas with the active one killed. Each case is the integration test of the
same name (tests/integration/test_resilience.py, test_operator_peering.py) run
with larger numbers through environment variables; the figures are the lines
those tests print. Run: `python benchmarks/fault_suite.py` (needs the local
cluster; `make cluster-up`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, machine, table, write_report

FIGURE = re.compile(r"^(SIGKILL storm|kube-apiserver down|etcd down|standby took over).*$", re.MULTILINE)


def main() -> str:
    env = {
        **os.environ,
        "SDC_FAULT_KILLS": "20",
        "SDC_FAULT_BATCH": "5",
        "SDC_FAULT_API_DOWN_S": "10,60,300",
        "SDC_KEEP_CLUSTER": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_resilience.py",
            "tests/integration/test_operator_peering.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [m.group(0) for m in FIGURE.finditer(result.stdout)]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    text = "\n".join(
        [
            "## Operator fault suite",
            "",
            f"Machine: {machine()}. `python benchmarks/fault_suite.py` (pytest: {summary}).",
            "",
            table(["case and figure"], [[line] for line in lines]) if lines else "no figures (see the pytest log)",
            "",
        ]
    )
    write_report("faults", text)
    print(text)
    if result.returncode != 0:
        print(result.stdout[-4000:], file=sys.stderr)
        sys.exit(1)
    return text


if __name__ == "__main__":
    main()
