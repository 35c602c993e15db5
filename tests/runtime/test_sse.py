"""Server-sent events stay one line per event whatever characters a sampled token holds."""

from __future__ import annotations

import json

import pytest
from sdc_runtime.server import sse_event

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(
    "text", ["a\x85b", "line\u2028separator", "para\u2029graph", "\n\r\x0b\x0c\x1c\x1d\x1e", "한국어 🙂"]
)
def test_an_event_is_one_line_for_a_client_that_splits_like_str_splitlines(text: str) -> None:
    event = sse_event({"choices": [{"delta": {"content": text}}]})
    assert event.endswith("\n\n")
    lines = event.splitlines()  # what httpx's aiter_lines does
    assert lines == [lines[0], ""] and lines[0].startswith("data: ")
    assert json.loads(lines[0][len("data: ") :])["choices"][0]["delta"]["content"] == text
