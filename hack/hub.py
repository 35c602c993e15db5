"""A model hub inside the cluster: tests/support/fake_hub.py serving tiny models, in a pod on the real node.

Why: nothing here reaches huggingface.co, yet the operator's Transformers pods
must download their model for real (init container, `sdc-fetch-model`,
`HF_ENDPOINT`). The hub's code and the model files are handed to the pod
through a hostPath (the real node runs on this machine), so no extra image is
needed: the runtime image already carries fastapi and uvicorn.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HUB_PORT = 8080


# The tiny model for vLLM's CPU backend: its attention kernels need a head dimension of at least 32.
VLLM_SHAPE = {"hidden_size": 256, "heads": 8, "kv_heads": 4}


def prepare(
    root: Path, models: dict[str, int], python: str = sys.executable, shapes: dict[str, dict[str, int]] | None = None
) -> Path:
    """Write `repo id -> seed` tiny models and the hub's code under `root`, readable by any uid.

    `shapes` gives a repository make_tiny_model's size arguments (e.g. VLLM_SHAPE).
    """
    for repo, seed in models.items():
        target = root / "models" / repo
        if not (target / "config.json").exists():
            shape = json.dumps((shapes or {}).get(repo, {}))
            code = (
                "import json, sys; from pathlib import Path; from sdc_runtime.tiny import make_tiny_model; "
                "make_tiny_model(Path(sys.argv[1]), seed=int(sys.argv[2]), max_positions=4096, "
                "**json.loads(sys.argv[3]))"
            )
            subprocess.run([python, "-c", code, str(target), str(seed), shape], check=True, capture_output=True)
    shutil.copyfile(ROOT / "tests" / "support" / "fake_hub.py", root / "fake_hub.py")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def url(namespace: str, name: str = "hub") -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{HUB_PORT}"


def egress_peer(namespace: str, name: str = "hub") -> dict[str, Any]:
    """The hub's pods as a NetworkPolicyPeer: the engines' egress policy admits only DNS and public HTTPS,
    and this hub is at a private address, so the chart must name it (networkPolicy.engineEgress.extraTo)."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
    }


def chart_values(namespace: str, name: str = "hub") -> list[str]:
    """helm arguments that make this hub the engines' model source: HF_ENDPOINT, and their egress to it."""
    return [
        "--set",
        f"operator.hfEndpoint={url(namespace, name)}",
        "--set-json",
        f"networkPolicy.engineEgress.extraTo={json.dumps([egress_peer(namespace, name)])}",
    ]


def objects(
    namespace: str, root: Path, image: str, revision: str, name: str = "hub", paced: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """A Deployment and a Service serving `root/models` at one revision; `paced` repositories slowly
    (bytes per second per download), so a download lasts long enough to watch its progress."""
    pace = [arg for repo, rate in sorted((paced or {}).items()) for arg in ("--pace", f"{repo}={rate}")]
    labels = {"app.kubernetes.io/name": name}
    container = {
        "name": "hub",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python", "/hub/fake_hub.py", "--root", "/hub/models", "--revision", revision],
        "args": ["--port", str(HUB_PORT), *pace],
        "ports": [{"containerPort": HUB_PORT, "name": "http"}],
        "readinessProbe": {"tcpSocket": {"port": HUB_PORT}, "periodSeconds": 1},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "hub", "mountPath": "/hub", "readOnly": True}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [{"name": "hub", "hostPath": {"path": str(root), "type": "Directory"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"selector": labels, "ports": [{"port": HUB_PORT, "targetPort": HUB_PORT, "name": "http"}]},
        },
    ]
