"""A local stand-in for the Hugging Face Hub's HTTP API: enough for model_info and file downloads.

Serves repositories from a directory (`root/owner/name/...`) at one revision;
a repository listed in `gated` answers 401 without the right bearer token.
Counting GETs lets tests prove that a second fetch downloads nothing; with
`bytes_per_second`, each download streams at that pace (progress and parallel
downloads can be watched), and `max_active` records how many ran at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


class FakeHub:
    def __init__(
        self,
        root: Path,
        revision: str,
        gated: dict[str, str] | None = None,
        bytes_per_second: int = 0,
        paced: dict[str, int] | None = None,
    ) -> None:
        self.root = root
        self.revision = revision
        self.gated = gated or {}
        self.bytes_per_second = bytes_per_second  # every download at this pace (0: at once) ...
        self.paced = paced or {}  # ... or only these repositories', at theirs
        self.downloads: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0
        self.app = self._build()

    def _denied(self, repo: str, request: Request) -> Response | None:
        token = self.gated.get(repo)
        if token and request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse(
                {"error": "Access to this repository is restricted"}, 401, headers={"X-Error-Code": "GatedRepo"}
            )
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/models/{owner}/{name}/revision/{revision}")
        async def info(owner: str, name: str, revision: str, request: Request) -> Response:
            repo = f"{owner}/{name}"
            if denied := self._denied(repo, request):
                return denied
            base = self.root / repo
            if revision != self.revision or not base.is_dir():
                return JSONResponse(
                    {"error": "Repository or revision not found"}, 404, headers={"X-Error-Code": "RevisionNotFound"}
                )
            siblings: list[dict[str, Any]] = []
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                data = path.read_bytes()
                entry: dict[str, Any] = {"rfilename": str(path.relative_to(base)), "size": len(data)}
                git_header = f"blob {len(data)}\0".encode()
                entry["blobId"] = hashlib.sha1(git_header + data, usedforsecurity=False).hexdigest()
                if path.suffix in (".safetensors", ".bin"):
                    entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            return JSONResponse(
                {"id": repo, "modelId": repo, "sha": self.revision, "siblings": siblings, "private": False, "tags": []}
            )

        @app.api_route("/{owner}/{name}/resolve/{revision}/{filename:path}", methods=["GET", "HEAD"])
        async def resolve(owner: str, name: str, revision: str, filename: str, request: Request) -> Response:
            repo = f"{owner}/{name}"
            if denied := self._denied(repo, request):
                return denied
            path = self.root / repo / filename
            if revision != self.revision or not path.is_file():
                return JSONResponse({"error": "Entry not found"}, 404, headers={"X-Error-Code": "EntryNotFound"})
            data = path.read_bytes()
            headers = {
                "X-Repo-Commit": self.revision,
                "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                "Content-Length": str(len(data)),
            }
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            self.downloads[filename] += 1
            pace = self.paced.get(repo, self.bytes_per_second)
            if not pace:
                return Response(data, headers=headers, media_type="application/octet-stream")
            return StreamingResponse(self._paced(data, pace), headers=headers, media_type="application/octet-stream")

        return app

    async def _paced(self, data: bytes, bytes_per_second: int) -> AsyncIterator[bytes]:
        chunk = max(1, bytes_per_second // 10)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for start in range(0, len(data), chunk):
                yield data[start : start + chunk]
                await asyncio.sleep(0.1)
        finally:
            self.active -= 1


def main() -> None:
    """Serve a directory as a hub (in a pod of the end-to-end suite: the runtime image has fastapi and uvicorn)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, required=True, help="directory with owner/name/... repositories")
    parser.add_argument("--revision", required=True, help="the one revision every repository answers to")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--pace", action="append", default=[], metavar="REPO=BYTES_PER_S", help="serve this repository slowly"
    )
    args = parser.parse_args()
    paced = {repo: int(rate) for repo, _, rate in (item.partition("=") for item in args.pace)}
    hub = FakeHub(args.root, args.revision, paced=paced)
    uvicorn.run(hub.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
