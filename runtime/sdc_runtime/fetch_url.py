"""`sdc-fetch-url`: download one file (a GGUF for Ollama) into the model cache, checked by sha256.

Ollama's own pull needs its registry on the internet. A LocalLLM with
`model.url` instead fetches a GGUF from any HTTP server the cluster can reach
(typically a Service inside it) with this command, in the fetcher image, before
the Ollama init container imports it. The destination is named by the digest,
so a file that is present is the right file: every later start on the same
cache skips the download. The file is written beside the destination and
renamed only after its sha256 matched, so a crash or a wrong file never leaves
a half-written model behind. Progress and the final line are JSON, like
`sdc-fetch-model`'s; the last line also goes to the termination log.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sdc_runtime.fetch import FetchError, emit, progress_fields

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
PROGRESS_EVERY_S = 2.0  # as sdc-fetch-model: the operator reads the newest line into the LocalLLM status


def fetch(url: str, sha256: str, dest: Path, *, timeout: float = 60) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"url '{url}' is not http(s)")
    if not SHA256_RE.match(sha256):
        raise FetchError("sha256 must be 64 lower-case hex digits")
    if dest.is_file():
        emit("cached", path=str(dest), bytes=dest.stat().st_size)
        return {"path": str(dest), "bytes": dest.stat().st_size, "seconds": 0.0, "cached": True}
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    started = time.monotonic()
    emit("start", url=url, path=str(dest))
    digest = hashlib.sha256()
    done = 0
    last_report = started
    request = urllib.request.Request(url, headers={"User-Agent": "sdc-fetch-url"})  # noqa: S310 - scheme checked
    with urllib.request.urlopen(request, timeout=timeout) as response, partial.open("wb") as out:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0)
        while block := response.read(CHUNK):
            out.write(block)
            digest.update(block)
            done += len(block)
            now = time.monotonic()
            if now - last_report > PROGRESS_EVERY_S and total >= done:  # no Content-Length: no percent to give
                last_report = now
                emit("progress", **progress_fields(done, total, 0, 1, now - started))
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise FetchError(f"sha256 of {url} is {digest.hexdigest()}, expected {sha256}: refusing the file")
    partial.rename(dest)
    return {"path": str(dest), "bytes": done, "seconds": round(time.monotonic() - started, 2), "cached": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-fetch-url", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--url", required=True, help="http(s) URL of the file")
    parser.add_argument("--sha256", required=True, help="expected SHA-256 (64 hex digits)")
    parser.add_argument("--dest", type=Path, required=True, help="where the file goes")
    parser.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"))
    args = parser.parse_args(argv)
    try:
        final = emit("done", **fetch(args.url, args.sha256, args.dest))
        code = 0
    except FetchError as err:
        final = emit("error", message=str(err))
        code = 2
    except OSError as err:  # unreachable server, HTTP error, full disk: the message says which
        final = emit("error", message=f"{type(err).__name__}: {err}")
        code = 1
    if args.termination_log.parent.is_dir():
        with contextlib.suppress(OSError):
            args.termination_log.write_text(final[:4000])
    sys.exit(code)


if __name__ == "__main__":
    main()
