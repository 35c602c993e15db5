"""The chat templates the example manifests pass inline (`--chat-template=...`), rendered as each engine does.

vLLM reads an inline template through Python's unicode_escape before Jinja sees it; sdc-runtime hands it
to the tokenizer as it is. The examples keep their templates ASCII (Korean as \\uXXXX inside Jinja string
literals), so both must render the same Korean prompt, and the API server's limits (512 characters an
argument, no line breaks) must hold.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import yaml
from sdc_operator.spec import LocalLLMSpec, semantic_errors

jinja2 = pytest.importorskip("jinja2")

ROOT = Path(__file__).resolve().parents[2]
CHAT = [{"role": "system", "content": "문맥만 근거로 답하세요."}, {"role": "user", "content": "수도는?"}]
EXPECTED = {
    "vllm-kullm-12.8b-korean.yaml": "문맥만 근거로 답하세요.\n\n### 명령어:\n수도는?\n\n### 응답:\n",
    "transformers-koalpaca-12.8b.yaml": "문맥만 근거로 답하세요.\n\n### 질문: 수도는?\n\n### 답변:",
}


def render(template: str) -> str:
    return str(jinja2.Environment().from_string(template).render(messages=CHAT, add_generation_prompt=True))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inline_templates_render_the_trained_format_in_both_engines(name: str) -> None:
    spec = LocalLLMSpec.model_validate(yaml.safe_load((ROOT / "manifests" / name).read_text())["spec"])
    assert semantic_errors(spec) == []
    (template,) = [a.split("=", 1)[1] for a in spec.engine.args if a.startswith("--chat-template=")]
    assert template.isascii() and "\n" not in template
    assert render(template) == EXPECTED[name], "as sdc-runtime renders it"
    assert render(codecs.decode(template, "unicode_escape")) == EXPECTED[name], "as vLLM renders it"
