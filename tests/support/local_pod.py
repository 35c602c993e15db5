"""Run the containers of an operator-built pod as local processes, the way a kubelet would.

Why: the engines' pod specs (init scripts, environment, probes, user) must be
proven against the real engine binaries even where no node runs containers.
The pod gets its own network namespace (loopback only: no route off the
machine, and its ports never collide with anything else here), every process
runs as the pod's runAsUser/runAsGroup with an empty environment plus the
container's `env`, and each container's volume mounts are mapped to host
directories: the one change from the spec, made by rewriting the mount paths
in the command, args, env and exec probes (a kubelet bind-mounts them instead).
Images are stood in for by `bin_dir`, which holds the engine's executables.
Needs root (network namespace, setpriv); callers skip otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


class LocalPod:
    def __init__(self, pod_spec: dict[str, Any], volumes: dict[str, Path], bin_dir: Path) -> None:
        self.spec = pod_spec
        self.volumes = volumes
        self.bin_dir = bin_dir
        security = pod_spec.get("securityContext", {})
        self.uid = int(security.get("runAsUser", 0))
        self.gid = int(security.get("runAsGroup", self.uid))
        fs_group = security.get("fsGroup")
        for path in volumes.values():  # what fsGroup does for the volumes: the pod's group may write
            path.mkdir(parents=True, exist_ok=True)
            if fs_group is not None:
                os.chown(path, self.uid, int(fs_group))
        self.holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep infinity"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes: list[subprocess.Popen[str]] = []
        deadline = time.monotonic() + 10
        while "lo" not in self._netns_links() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _netns_links(self) -> str:
        out = subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-n", "ip", "-o", "link", "show", "up"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout

    # -- the spec, mapped to this machine --------------------------------------------------
    def translate(self, container: dict[str, Any], value: str) -> str:
        """Rewrite a container's mount paths to the host directories (longest path first)."""
        mounts = sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))
        for mount in mounts:
            value = value.replace(mount["mountPath"], str(self.volumes[mount["name"]]))
        return value

    def argv(self, container: dict[str, Any], words: list[str]) -> list[str]:
        return [
            "nsenter",
            "-t",
            str(self.holder.pid),
            "-n",
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--",
            *[self.translate(container, w) for w in words],
        ]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin"}
        for item in container.get("env", []):
            assert "value" in item, f"only literal env values run locally: {item}"
            env[item["name"]] = self.translate(container, item["value"])
        return env

    def words(self, container: dict[str, Any]) -> list[str]:
        command = list(container.get("command") or [])
        assert command, "local containers need an explicit command (there is no image entrypoint)"
        resolved = shutil.which(command[0], path=f"{self.bin_dir}:/usr/bin:/bin") or command[0]
        return [resolved, *command[1:], *container.get("args", [])]

    # -- running ------------------------------------------------------------------------------
    def run_init(self, container: dict[str, Any], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(container, self.words(container)),
            env=self.env(container),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, container: dict[str, Any], log: Path) -> subprocess.Popen[str]:
        with log.open("w") as out:
            proc = subprocess.Popen(
                self.argv(container, self.words(container)),
                env=self.env(container),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.processes.append(proc)
        return proc

    def probe(self, container: dict[str, Any], kind: str) -> bool:
        """One run of the container's probe of this kind (readinessProbe, livenessProbe, ...)."""
        spec = container[kind]
        timeout = float(spec.get("timeoutSeconds", 1))
        if "exec" in spec:
            try:
                result = subprocess.run(
                    self.argv(
                        container, [self.words({"command": spec["exec"]["command"]})[0], *spec["exec"]["command"][1:]]
                    ),
                    env=self.env(container),
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return False
            return result.returncode == 0
        port = spec["httpGet"]["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        status, _ = self.http("GET", port, spec["httpGet"]["path"], timeout=timeout)
        return 200 <= status < 400

    def wait_probe(self, container: dict[str, Any], kind: str, timeout: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.probe(container, kind):
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"{container['name']}: {kind} did not pass within {timeout}s")

    def http(
        self, method: str, port: int, path: str, body: dict[str, Any] | None = None, timeout: float = 120
    ) -> tuple[int, str]:
        """An HTTP request from inside the pod's network namespace (curl)."""
        args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", str(timeout)]
        if body is not None:
            args += ["-H", "content-type: application/json", "--data-binary", json.dumps(body)]
        result = subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-n", *args, f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        text, _, code = result.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), text

    def serve_files(self, directory: Path, port: int) -> None:
        """A plain HTTP file server inside the pod's network: the stand-in for a Service in the cluster."""
        proc = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(self.holder.pid),
                "-n",
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.processes.append(proc)
        deadline = time.monotonic() + 15
        while self.http("GET", port, "/", timeout=2)[0] != 200:
            assert time.monotonic() < deadline, "the file server did not start"
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.holder.kill()
        self.holder.wait()
