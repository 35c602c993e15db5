"""A tiny real model and engines over it, shared by the runtime's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from sdc_runtime.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-shared") / "tiny-chat")
