"""`sdc-fetch-model`: put a pinned model snapshot into the model cache, once.

The operator's download step runs this in the model's namespace, before any
serving pod starts. It refuses sources outside the allow-list and unpinned
revisions, fetches safetensors (never pickled weights, never repository code)
unless told otherwise, resumes partial files, checks sizes and sha256 of
what arrived against the hub's listing, and writes a completion marker so the
next pod on the same cache skips the download. Progress goes to stdout as JSON
lines (one per file and a final summary), and the last line is also written
to the termination log, where the operator reads it into the LocalLLM status.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".sdc-complete.json"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SAFE_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
    "tokenizer*",
    "*.md",
)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
CODE_PATTERNS = ("*.py",)


class FetchError(Exception):
    """A refusal or failure; the message says what to change."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None


def cache_path(cache: Path, repo: str, revision: str) -> Path:
    """Where a snapshot lives in the cache: one folder per repository and revision."""
    return cache / "hf" / repo / revision


def check_allowed(repo: str, allow: list[str]) -> None:
    if not REPO_RE.match(repo):
        raise FetchError(f"'{repo}' is not a Hugging Face repository id (owner/name)")
    if not any(fnmatch.fnmatchcase(repo, pattern) for pattern in allow):
        raise FetchError(f"source '{repo}' is not in the allow-list ({', '.join(allow) or 'empty'})")


def patterns(allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    chosen = list(SAFE_PATTERNS)
    if allow_pickle:
        chosen += PICKLE_PATTERNS
    if trust_remote_code:
        chosen += CODE_PATTERNS
    return chosen


def wanted(name: str, globs: list[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(base, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def emit(event: str, **fields: Any) -> str:
    line = json.dumps({"event": event, **fields}, ensure_ascii=False)
    print(line, flush=True)
    return line


def emit_progress(name: str, index: int, count: int, done_bytes: int, total: int) -> None:
    """One progress line per file: what the operator (and a person tailing the logs) reads."""
    percent = round(100 * done_bytes / total, 1) if total else 100
    emit(
        "progress",
        file=name,
        files_done=index,
        files_total=count,
        bytes_done=done_bytes,
        bytes_total=total,
        percent=percent,
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_remote(repo: str, revision: str, token: str | None, endpoint: str | None) -> list[RemoteFile]:
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token).model_info(repo, revision=revision, files_metadata=True)
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        files.append(RemoteFile(sibling.rfilename, getattr(sibling, "size", None), sha))
    return files


def fetch_hub(
    repo: str, revision: str, dest: Path, globs: list[str], token: str | None, endpoint: str | None
) -> list[RemoteFile]:
    from huggingface_hub import hf_hub_download

    remote = [f for f in list_remote(repo, revision, token, endpoint) if wanted(f.name, globs)]
    if not any(f.name.endswith(".safetensors") or f.name.endswith(".bin") for f in remote):
        raise FetchError(
            f"{repo}@{revision} has no weights matching {', '.join(globs)} (pickled weights need --allow-pickle)"
        )
    total = sum(f.size or 0 for f in remote)
    done_bytes = 0
    for index, item in enumerate(remote, 1):
        target = dest / item.name
        if not _intact(target, item):
            hf_hub_download(
                repo,
                item.name,
                revision=revision,
                local_dir=dest,
                token=token,
                endpoint=endpoint,
                force_download=target.exists(),
            )
        done_bytes += item.size or target.stat().st_size
        emit_progress(item.name, index, len(remote), done_bytes, total)
    return remote


def _intact(path: Path, item: RemoteFile) -> bool:
    """Whether a file already in the cache is the one listed (size, and sha256 where the hub gives one)."""
    if not path.is_file() or (item.size is not None and path.stat().st_size != item.size):
        return False
    return item.sha256 is None or sha256_of(path) == item.sha256


def fetch_local(source: Path, dest: Path, globs: list[str]) -> list[RemoteFile]:
    if not source.is_dir():
        raise FetchError(f"local source {source} is not a directory")
    files = sorted(p for p in source.rglob("*") if p.is_file() and wanted(str(p.relative_to(source)), globs))
    remote = [RemoteFile(str(p.relative_to(source)), p.stat().st_size, sha256_of(p)) for p in files]
    total = sum(f.size or 0 for f in remote)
    done_bytes = 0
    for index, (path, item) in enumerate(zip(files, remote, strict=True), 1):
        target = dest / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        done_bytes += item.size or 0
        emit_progress(item.name, index, len(remote), done_bytes, total)
    return remote


def verify(dest: Path, remote: list[RemoteFile]) -> None:
    """Check that every listed file arrived whole; raise naming the first that did not."""
    for item in remote:
        path = dest / item.name
        if not path.is_file():
            raise FetchError(f"{item.name} is missing after download")
        if item.size is not None and path.stat().st_size != item.size:
            raise FetchError(f"{item.name} is {path.stat().st_size} bytes, expected {item.size}")
        if item.sha256 and sha256_of(path) != item.sha256:
            raise FetchError(f"{item.name} does not match its sha256 {item.sha256}")
    if not (dest / "config.json").is_file() and not any(dest.glob("*.gguf")):
        raise FetchError("the snapshot has no config.json: not a Transformers model")


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None and token_file.is_file():
        return token_file.read_text().strip() or None
    return os.environ.get("HF_TOKEN") or None


def run(args: argparse.Namespace) -> dict[str, Any]:
    allow = [p.strip() for p in (args.allow or os.environ.get("SDC_ALLOWED_SOURCES", "")).split(",") if p.strip()]
    check_allowed(args.repo, allow)
    if not COMMIT_RE.match(args.revision) and not args.allow_unpinned:
        raise FetchError(f"revision '{args.revision}' is not a pinned 40-character commit hash")
    dest = cache_path(args.cache, args.repo, args.revision)
    marker = dest / MARKER
    if marker.is_file():
        summary: dict[str, Any] = json.loads(marker.read_text())
        emit("cached", repo=args.repo, revision=args.revision, path=str(dest), files=len(summary["files"]))
        return summary
    dest.mkdir(parents=True, exist_ok=True)
    globs = patterns(args.allow_pickle, args.trust_remote_code)
    started = time.monotonic()
    emit("start", repo=args.repo, revision=args.revision, path=str(dest))
    token = read_token(args.token_file)
    if args.source:
        remote = fetch_local(Path(args.source), dest, globs)
    else:
        remote = fetch_hub(args.repo, args.revision, dest, globs, token, args.endpoint)
    verify(dest, remote)
    summary = {
        "repo": args.repo,
        "revision": args.revision,
        "path": str(dest),
        "files": [f.name for f in remote],
        "bytes": sum(f.size or 0 for f in remote),
        "seconds": round(time.monotonic() - started, 2),
    }
    marker.write_text(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-fetch-model", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--repo", required=True, help="Hugging Face repository id, e.g. google/gemma-2-9b-it")
    parser.add_argument("--revision", required=True, help="a pinned commit hash")
    parser.add_argument("--cache", type=Path, required=True, help="the model cache root (the PVC mount)")
    parser.add_argument(
        "--allow",
        default=None,
        help="comma-separated fnmatch patterns of allowed repositories (default: $SDC_ALLOWED_SOURCES)",
    )
    parser.add_argument("--source", default=None, help="copy from this local directory instead of the hub")
    parser.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT"), help="hub endpoint (a mirror)")
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the hub token")
    parser.add_argument("--allow-pickle", action="store_true", help="also fetch *.bin/*.pt weights")
    parser.add_argument("--trust-remote-code", action="store_true", help="also fetch the repository's *.py")
    parser.add_argument("--allow-unpinned", action="store_true", help="accept a branch or tag as revision")
    parser.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"))
    args = parser.parse_args(argv)
    try:
        summary = run(args)
        final = emit("done", **{k: v for k, v in summary.items() if k != "files"}, files=len(summary["files"]))
        code = 0
    except FetchError as err:
        final = emit("error", message=str(err))
        code = 2
    except Exception as err:  # the hub's own errors: keep the message, drop the traceback noise
        final = emit("error", message=f"{type(err).__name__}: {err}")
        code = 1
    if args.termination_log.parent.is_dir():
        with contextlib.suppress(OSError):
            args.termination_log.write_text(final[:4000])
    sys.exit(code)
