"""The state's per-generation cache of a LocalLLM's parsed spec and desired children."""

from __future__ import annotations

import copy
from typing import Any

from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import desired_children
from sdc_operator.settings import OperatorSettings
from sdc_operator.state import State, spec_view


def body(generation: int, uid: str = "u1", model: str = "gemma2:9b") -> dict[str, Any]:
    return {
        "apiVersion": "llm.sdc.dev/v1alpha1",
        "kind": "LocalLLM",
        "metadata": {"name": "m", "namespace": "t", "uid": uid, "generation": generation},
        "spec": {"runtime": "ollama", "model": {"name": model}},
    }


def test_one_parse_per_generation_and_a_new_one_for_a_new_spec_or_object() -> None:
    settings = OperatorSettings(ollama_image="ollama/ollama:9.9.9")
    state = State(settings)
    first = spec_view(state, body(1))
    assert first.errors == [] and first.llm is not None
    assert first.desired == desired_children(LocalLLM.from_body(body(1)), settings)  # the state's settings
    assert "ollama/ollama:9.9.9" in str(first.desired)
    status_write = copy.deepcopy(body(1))  # the same generation, as a later event shows it
    assert spec_view(state, status_write) is first
    edited = spec_view(state, body(2, model="gemma2:2b"))
    assert edited is not first and edited.llm is not None and edited.llm.spec.model.name == "gemma2:2b"
    recreated = spec_view(state, body(2, uid="u2", model="gemma2:2b"))
    assert recreated is not edited and recreated.version == ("u2", 2)


def test_an_invalid_spec_has_errors_and_no_children() -> None:
    bad = body(1)
    bad["spec"]["replicas"] = -1
    view = spec_view(State(), bad)
    assert view.llm is None and view.desired == [] and any("replicas" in e for e in view.errors), view
