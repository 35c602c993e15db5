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


def test_make_pki_reissues_the_serving_certificate_when_a_real_nodes_addresses_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cluster.make_pki as `up` calls it: first without a real node, then with a slot's addresses (the reissue
    path a real node takes), the CA and the admin certificate kept."""
    from hack import cluster

    monkeypatch.setattr(cluster, "PKI", tmp_path)

    def sans() -> str:
        crt = str(tmp_path / "apiserver.crt")
        return subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"],
                              capture_output=True, text=True).stdout  # fmt: skip

    cluster.make_pki(None)
    assert "DNS:kubernetes.default.svc.cluster.local" in sans() and "10.199" not in sans()
    ca, admin = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "admin.crt").read_bytes()
    cluster.make_pki(["IP:10.199.3.1", "IP:10.96.48.1"])
    assert "IP Address:10.199.3.1" in sans() and "IP Address:10.96.48.1" in sans() and "IP Address:127.0.0.1" in sans()
    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "admin.crt").read_bytes() == admin
    for stem in ("apiserver", "admin"):
        crt = str(tmp_path / f"{stem}.crt")
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), crt], capture_output=True)
        assert verify.returncode == 0, verify.stderr
    assert (tmp_path / "sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_cluster_wait_for_stops_when_its_component_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hack import cluster

    monkeypatch.setattr(cluster, "LOGS", tmp_path)
    monkeypatch.setattr(cluster, "PIDS", tmp_path)
    (tmp_path / "etcd.log").write_text("starting\nbind: address already in use\n")
    with pytest.raises(cluster.ClusterError, match="etcd exited while waiting for the API server:\nstarting\nbind"):
        cluster.wait_for("the API server", lambda: False, 5, "etcd")
    with pytest.raises(cluster.ClusterError, match=f"timed out after 0s waiting for nodes; see {tmp_path}"):
        cluster.wait_for("nodes", lambda: False, 0.1)


def test_common_is_standard_library_only_and_imports_no_script() -> None:
    """cluster.py and tools.py import it before any virtualenv exists; every script imports it (no cycles)."""
    import ast

    tree = ast.parse(Path(common.__file__).read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {str(n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "os", "subprocess", "time", "collections.abc", "pathlib", "typing"}, imported
