"""The operator is nobody's deputy: code-loading env and args refused, Secrets and claims used only when opened.

The CEL rules' patterns are RE2 that Python's `re` reads the same way; the API server's enforcement of them
is in tests/integration (a real API server). The reference decision is pure and tested here whole.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from sdc_operator.builders.common import LocalLLM
from sdc_operator.crd import crd
from sdc_operator.policy import ALLOW_LABEL, reference_errors, references
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import (
    CODE_ARG_PATTERN,
    CODE_ENV,
    EXECUTOR_FLAG_PATTERN,
    INLINE_TEMPLATE_PATTERN,
    SAFE_EXECUTOR_PATTERN,
    TEMPLATE_FLAG_PATTERN,
    LocalLLMSpec,
    is_code_env,
    semantic_errors,
)

from tests.conftest import ROOT

REV = "0123456789abcdef0123456789abcdef01234567"


def spec(**fields: Any) -> LocalLLMSpec:
    body = {"runtime": "vllm", "model": {"name": "google/gemma-2-9b-it", "revision": REV}, **fields}
    return LocalLLMSpec.model_validate(body)


CODE_ARGS = [
    "--tool-parser-plugin=/mnt/evil.py",
    "--tool-parser-plugin",
    "--tool_parser_plugin=/x.py",
    "--tool-parser-plug=/x.py",  # argparse takes unambiguous prefixes
    "--reasoning-parser-plugin=/x.py",
    "--logits-processors=evil.module:Proc",
    "--middleware=evil.asgi",
    "--worker-cls=evil.Worker",
    "--worker-extension-cls=evil.Ext",
    "--scheduler-cls=evil.Scheduler",
    '--kv-transfer-config={"kv_connector_module_path": "evil"}',
    "--allowed-local-media-path=/",
]
SAFE_ARGS = [
    "--reasoning-parser=deepseek_r1",
    "--tool-call-parser=hermes",
    "--enable-auto-tool-choice",
    "--max-num-seqs=8",
    "--kv-cache-dtype=fp8",
    "--max-model-len=4096",
    "--enforce-eager",
    "--chat-template-content-format=openai",
]


@pytest.mark.parametrize("arg", CODE_ARGS + SAFE_ARGS)
def test_engine_args_that_load_code_are_refused(arg: str) -> None:
    refused = arg in CODE_ARGS
    assert (arg, bool(re.match(CODE_ARG_PATTERN, arg))) == (arg, refused)
    errors = semantic_errors(spec(engine={"args": [arg]}))
    assert (arg, any("loads code" in e for e in errors)) == (arg, refused)


# Flags allowed with some values only: a backend's name, not a class; a template inline, not a file.
VALUE_REFUSED = [
    "--distributed-executor-backend=evil.module.Executor",
    "--distributed_executor_backend=evil.Executor",
    "--distributed-executor=evil.Executor",  # vLLM's parser takes this abbreviation
    "--distributed-e=evil.Executor",
    "-distributed-executor-backend=evil.Executor",
    "--distributed-executor-backend=mp.evil",
    "--distributed-executor-backend=MP",
    "--distributed-executor-backend",  # the value would be the next argument, which the rule cannot see
    "--chat-template=/proc/self/environ",
    "--chat_template=/etc/passwd",
    "--chat-template=./template.jinja",
    "--chat-template=template_chatml.jinja",  # a name: read from the working directory (or vLLM's own)
    "--chat-template=../../proc/self/environ",
    "--chat-template=/models/{{x}}/../../proc/self/environ",  # a directory named like a tag on a volume
    "--chat-template={{ x }}/../../etc/passwd",
    "--chat-template=",
    "--chat-template",
]
VALUE_ALLOWED = [
    "--distributed-executor-backend=mp",
    "--distributed-executor-backend=ray",
    "--distributed-executor-backend=uni",
    "--distributed-executor-backend=external_launcher",
    "--distributed_executor_backend=mp",
    "--chat-template={% for m in messages %}{{ m['content'] }}{% endfor %}",
    "--chat_template={{ messages[0]['content'] }}",
    "--chat-template={% for m in messages %}{{ m['content'] + '<\\u002fs>' }}{% endfor %}",
    "--chat-template-content-format=openai",  # another flag
    "--dtype=float16",  # a flag beginning like the backend's is not it
    "--data-parallel-size=1",
]


@pytest.mark.parametrize("arg", VALUE_REFUSED + VALUE_ALLOWED)
def test_flags_allowed_with_some_values_only(arg: str) -> None:
    refused = arg in VALUE_REFUSED
    by_pattern = (bool(re.match(EXECUTOR_FLAG_PATTERN, arg)) and not re.match(SAFE_EXECUTOR_PATTERN, arg)) or (
        bool(re.match(TEMPLATE_FLAG_PATTERN, arg)) and not re.match(INLINE_TEMPLATE_PATTERN, arg)
    )
    assert (arg, by_pattern) == (arg, refused)
    errors = semantic_errors(spec(engine={"args": [arg]}))
    named = [e for e in errors if "names a class to load" in e or "would read a file" in e]
    assert (arg, bool(named)) == (arg, refused), errors
    if refused:  # the message names what to write instead
        assert "--distributed-executor-backend=mp" in named[0] or "--chat-template={% ... %}" in named[0]


def test_the_manifests_inline_templates_stay_allowed() -> None:
    """Every example manifest's --chat-template is inline by the rule (they spell no '/')."""
    seen = 0
    for path in sorted((ROOT / "manifests").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for arg in ((doc or {}).get("spec") or {}).get("engine", {}).get("args", []):
                if re.match(TEMPLATE_FLAG_PATTERN, arg):
                    seen += 1
                    assert re.match(INLINE_TEMPLATE_PATTERN, arg), path.name
    assert seen >= 2


CODE_ENV_NAMES = ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "PYTHONPATH",
                  "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PATH", "GCONV_PATH", "BASH_ENV",
                  "NODE_OPTIONS", "PERL5OPT", "JAVA_TOOL_OPTIONS", "OPENSSL_CONF",
                  "VLLM_ALLOW_INSECURE_SERIALIZATION"]  # fmt: skip
SAFE_ENV_NAMES = ["PYTHONUNBUFFERED", "PYTHONHASHSEED", "OMP_NUM_THREADS", "VLLM_ATTENTION_BACKEND",
                  "CUDA_VISIBLE_DEVICES", "OLLAMA_KEEP_ALIVE", "TZ", "LDAP_URI", "MY_PATH"]  # fmt: skip


@pytest.mark.parametrize("name", CODE_ENV_NAMES + SAFE_ENV_NAMES)
def test_env_that_changes_how_code_loads_is_refused(name: str) -> None:
    refused = name in CODE_ENV_NAMES
    assert (name, is_code_env(name)) == (name, refused)
    errors = semantic_errors(spec(engine={"env": [{"name": name, "value": "x"}]}))
    assert (name, any("loads code" in e for e in errors)) == (name, refused)


def test_the_crd_carries_both_rules_with_their_messages() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["message"]: r["rule"] for r in schema["x-kubernetes-validations"]}
    args = next(m for m in rules if m.startswith("engine.args must not load code"))
    env = next(m for m in rules if m.startswith("engine.env must not change how code loads"))
    assert "--tool-parser-plugin" in args and "LD_*" in env and "PYTHON*" in env
    backend = next(m for m in rules if "--distributed-executor-backend takes a class" in m)
    template = next(m for m in rules if m.startswith("engine.args must not read files by path"))
    assert EXECUTOR_FLAG_PATTERN in rules[backend] and SAFE_EXECUTOR_PATTERN in rules[backend]
    assert TEMPLATE_FLAG_PATTERN in rules[template] and INLINE_TEMPLATE_PATTERN in rules[template]
    assert all(name in rules[env] for name in CODE_ENV)


# -- references ---------------------------------------------------------------------------------------------
FULL = spec(
    engine={"env": [{"name": "API", "secretKeyRef": {"name": "sdc-api-keys", "key": "keys"}}]},
    model={"name": "google/gemma-2-9b-it", "revision": REV, "tokenSecretRef": {"name": "hf", "key": "token"}},
    cache={"existingClaim": "sdc-documents"},
)
OPEN = {ALLOW_LABEL: "true"}


def test_references_name_every_secret_and_claim_with_its_field() -> None:
    assert references(FULL) == [
        ("Secret", "sdc-api-keys", "engine.env[0].secretKeyRef"),
        ("Secret", "hf", "model.tokenSecretRef"),
        ("PersistentVolumeClaim", "sdc-documents", "cache.existingClaim"),
    ]
    source = spec(model={"name": "google/gemma-2-9b-it", "source": {"claimName": "weights", "path": "m"}})
    assert ("PersistentVolumeClaim", "weights", "model.source.claimName") in references(source)
    assert references(spec()) == []


@pytest.mark.parametrize(
    ("case", "labels", "allowed", "refused"),
    [
        ("every object labelled", {"hf": OPEN, "sdc-api-keys": OPEN, "sdc-documents": OPEN}, {}, []),
        ("none labelled", {"hf": {}, "sdc-api-keys": {}, "sdc-documents": {}}, {},
         ["sdc-api-keys", "hf", "sdc-documents"]),
        ("label false", {"hf": {ALLOW_LABEL: "false"}, "sdc-api-keys": OPEN, "sdc-documents": OPEN}, {}, ["hf"]),
        ("label on another key", {"hf": {"app": "true"}, "sdc-api-keys": OPEN, "sdc-documents": OPEN}, {}, ["hf"]),
        ("missing secret", {"sdc-api-keys": OPEN, "sdc-documents": OPEN}, {}, ["hf"]),
        ("allow-listed", {"hf": {}, "sdc-api-keys": {}, "sdc-documents": {}},
         {"allowed_secrets": ["ns/hf", "ns/sdc-*"], "allowed_claims": ["ns/sdc-documents"]}, []),
        ("allow-list of another namespace", {"hf": {}, "sdc-api-keys": OPEN, "sdc-documents": OPEN},
         {"allowed_secrets": ["other/hf"]}, ["hf"]),
        ("a secret's allow-list does not open a claim", {"hf": OPEN, "sdc-api-keys": OPEN, "sdc-documents": {}},
         {"allowed_secrets": ["ns/sdc-documents"]}, ["sdc-documents"]),
    ],
)  # fmt: skip
def test_reference_decision(case: str, labels: dict[str, dict[str, str]], allowed: dict[str, list[str]],
                            refused: list[str]) -> None:  # fmt: skip
    kinds = {"hf": "Secret", "sdc-api-keys": "Secret", "sdc-documents": "PersistentVolumeClaim"}
    labels_of: dict[tuple[str, str], dict[str, str] | None] = {(kinds[n], n): v for n, v in labels.items()}
    errors = reference_errors("ns", references(FULL), labels_of, OperatorSettings(**allowed))
    assert (case, [next(n for n in kinds if f"'{n}'" in e) for e in errors]) == (case, refused)
    for error in errors:  # each names the field, the object and what to do
        assert any(f in error for f in ("secretKeyRef", "tokenSecretRef", "existingClaim"))
        assert ALLOW_LABEL in error or "does not exist" in error


def test_a_refused_reference_builds_nothing() -> None:
    """The handler builds children only for a spec without errors: the decision above is what gates it."""
    llm = LocalLLM("m", "ns", "uid", 1, FULL)
    assert references(llm.spec) and reference_errors("ns", references(llm.spec), {}, OperatorSettings())
