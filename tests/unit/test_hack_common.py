"""hack/common.py: the certificates every cluster script issues, the one wait loop, kubeconfigs, `ctr`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hack import common


class Failed(common.HackError):
    pass


def test_issued_certificates_chain_to_the_ca_with_their_extensions(tmp_path: Path) -> None:
    common.issue_ca(tmp_path, "/CN=test-ca")
    common.issue(tmp_path, "kubelet", "/CN=node", ["subjectAltName=IP:10.199.3.2", "extendedKeyUsage=serverAuth"])
    crt = str(tmp_path / "kubelet.crt")
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), crt], capture_output=True)
    assert verified.returncode == 0, verified.stderr
    text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-text"], capture_output=True, text=True).stdout
    assert "IP Address:10.199.3.2" in text and "TLS Web Server Authentication" in text


def test_a_failed_openssl_raises_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(Failed, match="openssl x509 failed"):
        common.issue(tmp_path, "x", "/CN=x", ["extendedKeyUsage=clientAuth"], error=Failed)  # no CA here


def test_wait_for_returns_the_value_and_says_why_it_stopped() -> None:
    values = iter([0, "", "ready"])
    assert common.wait_for("it", lambda: next(values), 5, interval=0.01) == "ready"
    with pytest.raises(Failed, match=r"timed out after 0s waiting for it; see logs$"):
        common.wait_for("it", lambda: False, 0.05, interval=0.01, hint=lambda: "; see logs", error=Failed)
    with pytest.raises(Failed, match=r"^gone$"):
        common.wait_for("it", lambda: False, 5, interval=0.01, exited=lambda: "gone", error=Failed)


def test_kubeconfig_joins_its_one_cluster_and_user() -> None:
    config = common.kubeconfig("c", {"server": "https://x"}, "u", {"token": "t"}, "ctx")
    assert config["current-context"] == "ctx"
    assert config["contexts"] == [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}]


def test_ctr_enters_the_holders_namespaces_and_the_kubelets_image_namespace() -> None:
    argv = common.ctr(42, Path("/s/containerd.sock"))
    assert argv == ["nsenter", "-t", "42", "-m", "-n", "--", "ctr", "--address=/s/containerd.sock", "-n", "k8s.io"]
