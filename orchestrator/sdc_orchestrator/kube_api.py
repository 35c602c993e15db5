"""The orchestrator's access to the Kubernetes API from inside its pod: server, projected token, CA.

Two clients use it: the endpoints watch (endpoint_watch.py: get/list/watch on one ConfigMap) and the scale
write (scaling/client.py: patch on `localllms/scale`). Both authenticate with the pod's projected
ServiceAccount token, which the kubelet rotates: it is reread for every request, never cached. Where no
token or CA file exists (local development, a stand-in API server in tests) the request goes without it.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ApiAccess:
    server: str
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(cls, account: Path = SERVICE_ACCOUNT) -> ApiAccess | None:
        """The pod's API access, or None where the pod has none (no token mounted, not in a cluster)."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host or not (account / "token").is_file():
            return None
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", account / "token", account / "ca.crt")

    def url(self, path: str) -> str:
        return f"{self.server.rstrip('/')}{path}"

    def session(self, timeout: aiohttp.ClientTimeout, read_bufsize: int = 2**16) -> aiohttp.ClientSession:
        """A session that trusts the cluster's CA (the system's where there is no CA file)."""
        context: ssl.SSLContext | bool = True
        if self.ca_file is not None and self.ca_file.is_file():
            context = ssl.create_default_context(cafile=str(self.ca_file))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), timeout=timeout, read_bufsize=read_bufsize
        )

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.token_file is not None and self.token_file.is_file():  # projected tokens rotate: read each time
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        return headers

    def request(
        self, session: aiohttp.ClientSession, method: str, path: str, *, content_type: str | None = None, **kw: Any
    ) -> Any:
        """`session.request` on the API server's `path` with the token (an async context manager)."""
        return session.request(method, self.url(path), headers=self.headers(content_type), **kw)
