"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sdc_operator import kube


@pytest.fixture
def kube_api(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's API client (`sdc_operator.kube`) pointed at the local cluster for one test."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    kube._configuration.cache_clear()
    yield
    kube._configuration.cache_clear()
