"""`sdc-orchestrator`'s command line, as a process."""

from __future__ import annotations

import subprocess
import sys


def test_more_than_one_worker_is_refused_with_the_reason() -> None:
    """State is per process (documents, feedback, limits, cool-downs): N workers would diverge, so it never starts."""
    done = subprocess.run(
        [sys.executable, "-m", "sdc_orchestrator", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers 2" in done.stderr and "documents" in done.stderr and "one worker per process" in done.stderr
