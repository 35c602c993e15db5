"""The operator is nobody's deputy, on the local cluster's real API server.

Whoever may create a LocalLLM must not get, through the operator, what they could not do with a pod
of their own: engine env that changes how code loads and engine args that load code are refused at
admission (CEL, with the message); a Secret or claim the LocalLLM names is used only when it carries
`llm.sdc.dev/allow-localllm: "true"` (otherwise Failed naming it, nothing built), and labelling it is
enough for the operator to build (its retry timer checks again: labelling sends it no event).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess, running_operator, tiny, wait_phase

ENDPOINTS_NS = "sdc"


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from running_operator(kubectl, kubeconfig, tmp_path_factory.mktemp("operator"), ENDPOINTS_NS)


REFUSED: dict[str, dict[str, Any]] = {
    "LD_PRELOAD": {"env": [{"name": "LD_PRELOAD", "value": "/cache/evil.so"}]},
    "PYTHONPATH": {"env": [{"name": "PYTHONPATH", "value": "/cache/evil"}]},
    "PYTHONSTARTUP": {"env": [{"name": "PYTHONSTARTUP", "value": "/cache/evil.py"}]},
    "GCONV_PATH": {"env": [{"name": "GCONV_PATH", "value": "/cache"}]},
    "--tool-parser-plugin": {"args": ["--tool-parser-plugin=/cache/evil.py"]},
    "--tool-parser-plug (abbreviated)": {"args": ["--tool-parser-plug", "/cache/evil.py"]},
    "--middleware": {"args": ["--middleware=evil.asgi"]},
    "--worker-extension-cls": {"args": ["--worker-extension-cls=evil.Ext"]},
    "--distributed-executor-backend (a class)": {"args": ["--distributed-executor-backend=evil.Executor"]},
    "--distributed-executor (abbreviated, bare)": {"args": ["--distributed-executor", "evil.Executor"]},
    "--chat-template (a path)": {"args": ["--chat-template=/proc/self/environ"]},
    "--chat-template (bare)": {"args": ["--chat-template", "{{ x }}"]},
    "--chat-template (a tag-named directory)": {"args": ["--chat-template=/models/{{x}}/../../proc/self/environ"]},
}


def test_admission_refuses_code_loading_env_and_args(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    outcomes = {}
    for i, (case, engine) in enumerate(REFUSED.items()):
        out = kubectl("apply", "-f", "-", stdin=json.dumps(tiny(f"c{i}", namespace, engine=engine)), check=False)
        message = "must not change how code loads" if "env" in engine else "must not load code"
        if "--chat-template" in case:
            message = "must not read files by path"
        outcomes[case] = (message in out and "Invalid" in out, out.strip()[-300:])
    assert {k: v[0] for k, v in outcomes.items()} == dict.fromkeys(REFUSED, True), outcomes
    assert kubectl("get", "llm", "-n", namespace, "-o", "name") == ""
    harmless = {
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "args": [
            "--reasoning-parser=deepseek_r1",
            "--distributed-executor-backend=mp",
            "--chat-template={{ messages[0]['content'] }}",
        ],
    }
    out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(tiny("ok", namespace, engine=harmless)))
    assert "created (server dry run)" in out, out


def secret(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"token": "hf_x", "keys": "a:b"}}


def test_an_unlabelled_secret_fails_the_localllm_until_its_owner_opens_it(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply([secret("api-keys", namespace), secret("hf", namespace)])
    env = [{"name": "STOLEN", "secretKeyRef": {"name": "api-keys", "key": "keys"}}]
    kubectl.apply(tiny("deputy", namespace, engine={"env": env}, model={"tokenSecretRef": {"name": "hf"}}))
    failed = wait_phase(kubectl, "deputy", namespace, "Failed")
    message = failed["status"]["message"]
    assert "Secret 'api-keys'" in message and "engine.env[0].secretKeyRef" in message, failed["status"]
    assert "Secret 'hf'" in message and "llm.sdc.dev/allow-localllm" in message
    time.sleep(2)
    assert kubectl("get", "deploy,svc,pvc", "-n", namespace, "-o", "name") == "", "nothing built"
    # The owner opens both: the operator's retry timer notices, with no LocalLLM event.
    kubectl("label", "secret", "api-keys", "hf", "-n", namespace, "llm.sdc.dev/allow-localllm=true")
    started = time.monotonic()
    wait_until("the Deployment", lambda: kubectl.get("deploy", "-n", namespace)["items"], timeout=60)
    print(f"\nbuilt {time.monotonic() - started:.1f} s after the label")
    pod = kubectl.get("deploy", "deputy", "-n", namespace)["spec"]["template"]["spec"]
    refs = json.dumps(pod)
    assert '"name": "api-keys"' in refs


def test_an_unlabelled_claim_is_never_mounted(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "sdc-documents", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kubectl.apply(claim)
    kubectl.apply(tiny("mounter", namespace, cache={"existingClaim": "sdc-documents"}))
    failed = wait_phase(kubectl, "mounter", namespace, "Failed")
    assert "PersistentVolumeClaim 'sdc-documents'" in failed["status"]["message"], failed["status"]
    assert "cache.existingClaim" in failed["status"]["message"]
    time.sleep(2)
    assert kubectl("get", "deploy,svc", "-n", namespace, "-o", "name") == ""
    kubectl.apply(tiny("missing", namespace, model={"source": {"claimName": "nope", "path": "m"}}))
    failed = wait_phase(kubectl, "missing", namespace, "Failed")
    assert "does not exist" in failed["status"]["message"], failed["status"]
