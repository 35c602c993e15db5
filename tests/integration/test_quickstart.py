"""The README's real-cluster quickstart, run as written: its code block, line by line, through bash.

A newcomer copies these lines; they must work on a fresh cluster with nothing else set. What KWOK
cannot do is stated, not papered over: on the simulated nodes no container runs, so the chart's
operator pod is played by the real operator as a process here, with the chart's own ServiceAccount
token (as in test_chart_install.py), and `helm test` (a pod that must run to completion) is left to
the real node (test_real_node.py runs it). Where the cluster has a real node the quickstart's model
would be pulled from the internet, so the test runs on the simulated cluster only
(`SDC_REAL_NODE=0 make cluster-up`, or a kind cluster).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Kubectl, wait_until
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_chart_install import token_kubeconfig

SECTION = "## Installing on a real cluster"


def quickstart_commands() -> list[str]:
    """The first ```sh block after the section heading, one command per line (comments stay: bash drops them)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, f"no ```sh block under {SECTION!r}"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_quickstart_block_is_namespaced() -> None:
    """Every kubectl line names the release's namespace: a LocalLLM in `default` is never served."""
    commands = quickstart_commands()
    namespace = re.search(r"helm install \S+ \S+ -n (\S+)", commands[0])
    assert namespace and "--wait" in commands[0], commands[0]
    for command in commands:
        if command.startswith("kubectl"):
            assert f"-n {namespace.group(1)}" in command, command


@pytest.mark.timeout(900)
def test_readme_quickstart_as_written(kubectl: Kubectl, kubeconfig: Path, tmp_path: Path) -> None:
    if kubectl.get("nodes", "-l", "type=real")["items"]:
        pytest.skip("the quickstart's model comes from the internet on a real node: run with SDC_REAL_NODE=0")
    commands = quickstart_commands()
    found = re.search(r"helm install (\S+) \S+ -n (\S+)", commands[0])
    assert found, commands[0]
    release, namespace = found.groups()
    fullname = release if "sdc" in release else f"{release}-sdc"  # the chart's sdc.fullname
    if kubectl("get", "namespace", namespace, "-o", "name", check=False).strip() == f"namespace/{namespace}":
        pytest.skip(f"namespace {namespace} exists already: the quickstart wants a fresh cluster")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{ROOT / 'bin'}:{os.environ['PATH']}"}
    # A fresh cluster has no CRDs; this one may hold them from earlier tests' releases (kept on uninstall),
    # which a plain `helm install` refuses to adopt. Hand them to the quickstart's release first, as if fresh.
    for crd in ("localllms.llm.sdc.dev", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        if (
            kubectl("get", "crd", crd, "-o", "name", check=False).strip()
            == f"customresourcedefinition.apiextensions.k8s.io/{crd}"
        ):
            kubectl(
                "annotate",
                "--overwrite",
                "crd",
                crd,
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={namespace}",
            )
            kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
    operator: OperatorProcess | None = None
    timings: list[str] = []
    try:
        for command in commands:
            started = time.monotonic()
            if command.startswith("helm test"):
                timings.append(f"{command}: not on simulated nodes (test_real_node.py runs it)")
                continue
            if re.search(r"\s-w(\s|$)", command):  # a watch: read until the model is Ready, then stop it
                lines = watch_until(command, env, "Ready", timeout=300)
                assert any(re.search(r"\sReady\s", f" {line} ") for line in lines), lines
            else:
                done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            timings.append(f"{command}: {time.monotonic() - started:.1f}s")
            if command.startswith("helm install"):
                # The chart's operator pod is simulated: the real operator plays it, with the chart's RBAC.
                token = token_kubeconfig(kubectl, kubeconfig, namespace, f"{fullname}-operator", tmp_path / "sa")
                operator = OperatorProcess(
                    token, namespace, tmp_path / "operator.log", SDC_ENDPOINTS_CONFIGMAP=f"{fullname}-endpoints"
                )
                operator.start()
        # The model landed where the release serves: published in the release's endpoints.
        published = wait_until(
            "the model in the release's endpoints",
            lambda: kubectl(
                "get",
                "configmap",
                f"{fullname}-endpoints",
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.endpoints\\.json}",
                check=False,
            ).strip(),
            timeout=60,
        )
        endpoints = json.loads(published)["endpoints"]
        assert endpoints and {e["namespace"] for e in endpoints} == {namespace}, endpoints
        print("\n".join(timings))
    finally:
        if operator is not None:
            operator.stop()
        kubectl("delete", "llm", "--all", "-n", namespace, "--timeout=60s", check=False)
        subprocess.run(["bash", "-c", f"helm uninstall {release} -n {namespace} --wait"], env=env, capture_output=True)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def watch_until(command: str, env: dict[str, str], word: str, timeout: float) -> list[str]:
    """Run a `-w` command, collect its lines until one names `word` (as a column), then stop it."""
    proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if re.search(rf"\s{word}\s", line):
                return lines
            assert time.monotonic() < deadline, lines
    finally:
        proc.kill()
        proc.wait()
    return lines
