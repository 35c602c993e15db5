"""`make demo`'s path, end to end on real pods: the README's first command must keep working."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(3600)  # a cold run builds the images first (see the `images` fixture)
def test_demo_runs_end_to_end(kubeconfig: Path, images: None) -> None:
    suffix = uuid.uuid4().hex[:6]
    env = {**os.environ, "SDC_DEMO_NAMESPACE": f"demo-{suffix}", "SDC_DEMO_RELEASE": f"demo-{suffix}"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "phase: Ready" in out
    assert "source 1 : [busan]" in out
    assert "provider : transformers" in out and "fallback: False" in out
    assert "sdc-real-node" in out  # `kubectl get pods -o wide`: the pods ran on the real node
    assert "Demo complete" in out
