"""The chart against the real API server: server-side dry run, install, upgrade, uninstall.

The operator Deployment's pods are simulated by KWOK (Available, no container:
the chart's pods are pinned to the simulated CPU node); the real operator runs
here as a process with the chart's ServiceAccount token, so the RBAC the chart
grants is exactly what the test proves sufficient. The same chart on real pods:
tests/integration/test_real_node.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import yaml

from hack.cluster import serviceaccount_kubeconfig
from tests.conftest import ROOT, SIMULATED_NODE_SELECTOR, SIMULATED_TOLERATION, Kubectl, globbed, wait_until
from tests.integration.operator_harness import OperatorProcess, wait_phase

CHART = ROOT / "charts" / "sdc"
HELM = str(ROOT / "bin" / "helm")
# The chart's pods on the simulated CPU node (KWOK makes them Available without containers).
SIMULATED_VALUES = [
    arg
    for component in ("operator", "orchestrator")
    for arg in (
        "--set-json",
        f"{component}.nodeSelector={json.dumps(SIMULATED_NODE_SELECTOR)}",
        "--set-json",
        f"{component}.tolerations={json.dumps([SIMULATED_TOLERATION])}",
    )
]


def helm(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run([HELM, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def token_kubeconfig(kubectl: Kubectl, admin: Path, namespace: str, account: str, out: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount: the chart's identity, not the admin's."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    cluster = yaml.safe_load(admin.read_text())["clusters"][0]["cluster"]  # YAML too: kind writes YAML
    out.write_text(json.dumps(serviceaccount_kubeconfig(cluster, token)))
    return out


def test_rendered_manifests_pass_server_side_dry_run(kubectl: Kubectl, kubeconfig: Path, namespace: str) -> None:
    for crd in globbed(ROOT / "crds", "*.yaml"):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl("wait", "--for=condition=Established", "crd/localllms.llm.sdc.dev", "--timeout=30s")
    for team in ("team-a", "team-b"):  # the namespaced scenario's watch list
        kubectl("create", "namespace", team, check=False)
    for values in [None, *globbed(CHART / "ci", "*.yaml")]:
        args = [
            "template",
            "dry",
            str(CHART),
            "-n",
            namespace,
            "--api-versions",
            "llm.sdc.dev/v1alpha1/LocalLLM",
            "--set",
            "models[0].name=gemma",
            "--set",
            "models[0].spec.runtime=ollama",
            "--set",
            "models[0].spec.model.name=gemma2:9b",
            "--set",
            "metrics.serviceMonitor.enabled=false",
        ]
        if values:
            args += ["-f", str(values)]
        rendered = helm(kubeconfig, *args)
        out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
        assert "localllm.llm.sdc.dev/gemma created (server dry run)" in out


def test_install_serve_upgrade_uninstall(kubectl: Kubectl, kubeconfig: Path, tmp_path: Path) -> None:
    release = f"sdc-{uuid.uuid4().hex[:6]}"
    ns = release
    helm(
        kubeconfig,
        "install",
        release,
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "--take-ownership",
        *SIMULATED_VALUES,
        "--wait",
        "--timeout",
        "2m",
    )
    operator_name = f"{release}-operator"
    deployment = kubectl.get("deployment", operator_name, "-n", ns)
    assert deployment["status"]["availableReplicas"] == 1
    # The defaults keep documents and feedback on a claim (bound, or `--wait` would not have returned).
    claim = kubectl.get("pvc", f"{release}-orchestrator-data", "-n", ns)
    assert claim["status"]["phase"] == "Bound"
    # `helm test` is registered (it runs on the real node, where pods run: test_real_node.py).
    hooks = helm(kubeconfig, "get", "hooks", release, "-n", ns)
    assert "helm.sh/hook: test" in hooks and "sdc_orchestrator.selfcheck" in hooks
    # The gateway's defaults as the API server holds them: a key Secret, and engines closed to all but the
    # orchestrator. (That traffic is dropped: test_network_policy.py, on the real node, where kube-router enforces.)
    keys = kubectl.get("secret", f"{release}-api-keys", "-n", ns)
    assert base64.b64decode(keys["data"]["keys"]).decode().startswith("admin:sk-sdc-")
    engines = kubectl.get("networkpolicy", f"{release}-engines", "-n", ns)
    assert engines["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/managed-by"] == "sdc-operator"
    [peer] = engines["spec"]["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "sdc-orchestrator"
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": ns}
    # The real operator, with exactly the chart's RBAC and its engine policy values.
    sa_config = token_kubeconfig(kubectl, kubeconfig, ns, operator_name, tmp_path / "sa.kubeconfig")
    operator_env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    operator = OperatorProcess(
        sa_config,
        ns,
        tmp_path / "operator.log",
        SDC_ENDPOINTS_CONFIGMAP=f"{release}-endpoints",
        SDC_ENGINE_NETWORK_POLICY=str(operator_env["SDC_ENGINE_NETWORK_POLICY"]),
    )
    operator.start()
    team = f"{release}-team"  # a namespace the release does not serve: the operator gives its engine a policy
    kubectl("create", "namespace", team)
    try:
        example = yaml.safe_load((ROOT / "manifests" / "ollama-gemma2-9b.yaml").read_text())
        example["spec"]["scheduling"] = {"nodeSelector": SIMULATED_NODE_SELECTOR, "tolerations": [SIMULATED_TOLERATION]}
        kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(example))  # KWOK plays the engine
        ready = wait_phase(kubectl, "gemma2-9b", ns, "Ready", timeout=120)
        assert ready["status"]["endpoint"].endswith(":11434/v1")
        assert kubectl("get", "networkpolicy", "-n", ns, "-l", "llm.sdc.dev/localllm", "-o", "name") == "", (
            "the chart's namespace-wide policy covers the release's namespace"
        )
        kubectl("apply", "-n", team, "-f", "-", stdin=json.dumps(example))
        wait_phase(kubectl, "gemma2-9b", team, "Ready", timeout=120)
        own = kubectl.get("networkpolicy", "gemma2-9b", "-n", team)
        assert own["spec"]["ingress"][0]["ports"] == [{"port": 11434, "protocol": "TCP"}]
        assert own["spec"]["ingress"][0]["from"] == engines["spec"]["ingress"][0]["from"]
        assert own["spec"]["policyTypes"] == ["Ingress", "Egress"], "egress is on by default"

        def published() -> list[dict[str, object]]:
            out = kubectl("get", "configmap", f"{release}-endpoints", "-n", ns, "-o", "json", check=False)
            if not out.startswith("{"):
                return []
            return list(json.loads(json.loads(out)["data"]["endpoints.json"])["endpoints"])

        # Published through the chart's RBAC: the ready model, by name and address, in the release's ConfigMap.
        endpoints = wait_until("gemma2-9b in the endpoints ConfigMap", published)
        assert {(e["localLLM"], e["runtime"]) for e in endpoints} == {("gemma2-9b", "ollama")}, endpoints
        assert all(str(e["baseUrl"]).endswith(":11434/v1") for e in endpoints), endpoints
        assert "Forbidden" not in operator.tail(400), operator.tail(40)
    finally:
        operator.stop()
        kubectl("delete", "namespace", team, "--wait=false")
    helm(
        kubeconfig,
        "upgrade",
        release,
        str(CHART),
        "-n",
        ns,
        *SIMULATED_VALUES,
        "--set",
        "operator.replicas=2",
        "--wait",
        "--timeout",
        "2m",
    )
    assert kubectl.get("deployment", operator_name, "-n", ns)["status"]["availableReplicas"] == 2
    assert kubectl.get("pdb", operator_name, "-n", ns)["spec"]["maxUnavailable"] == 1
    after = kubectl.get("secret", f"{release}-api-keys", "-n", ns)
    assert after["data"] == keys["data"], "an upgrade keeps the generated key"
    kubectl("delete", "llm", "--all", "-n", ns)
    helm(kubeconfig, "uninstall", release, "-n", ns, "--wait")
    selector = f"app.kubernetes.io/instance={release}"
    wait_until(
        "the release's objects to be gone",
        lambda: (
            kubectl("get", "deploy,svc,sa,role,rolebinding,networkpolicy,pdb", "-n", ns, "-l", selector, "-o", "name")
            == ""
        ),
    )
    # Uploaded documents outlive the release (helm.sh/resource-policy: keep on their claim).
    assert kubectl("get", "pvc", "-n", ns, "-l", selector, "-o", "name").strip() == (
        f"persistentvolumeclaim/{release}-orchestrator-data"
    )
    assert kubectl("get", "clusterrole,clusterrolebinding", "-l", selector, "-o", "name") == ""
    assert kubectl.get("crd", "localllms.llm.sdc.dev")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    kubectl("delete", "namespace", ns, "--wait=false")
